//! The system under test as separate processes of the built binaries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use airline_runtime::Service;
use anyhow::Context as _;
use tokio::process::{Child, Command};

use super::faults::GATEWAY;

/// A running process of the system.
pub(super) struct Process {
    name: String,
    child: Child,
}

/// The system's processes.
pub(super) struct System {
    pub(super) bin_dir: PathBuf,
    pub(super) logs: PathBuf,
    pub(super) env: Vec<(String, String)>,
    pub(super) base_port: u16,
    pub(super) running: HashMap<String, Process>,
    pub(super) next_port: u16,
}

impl System {
    pub(super) fn spawn(
        &mut self,
        key: &str,
        service: &Service,
        extra: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let binary = self.bin_dir.join(service.binary());
        let port = if service.name == GATEWAY.name {
            self.base_port
        } else {
            self.next_port += 1;
            self.next_port
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{key}.log")))
            .with_context(|| format!("opening the log of {key} in {}", self.logs.display()))?;
        let mut cmd = Command::new(&binary);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AIRLINE_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} (build it first)", binary.display()))?;
        self.running.insert(
            key.to_owned(),
            Process {
                name: service.name.to_owned(),
                child,
            },
        );
        Ok(())
    }

    pub(super) async fn kill(&mut self, key: &str) {
        if let Some(mut p) = self.running.remove(key) {
            let _ = p.child.kill().await;
        }
    }

    /// SIGTERM, then up to 20 s for a graceful stop, then SIGKILL.
    pub(super) async fn terminate(&mut self, key: &str) {
        if let Some(mut p) = self.running.remove(key) {
            if let Some(pid) = p.child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(20), p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
    }

    /// The processes that exited on their own (crashes) since the last look.
    pub(super) fn crashed(&mut self) -> Option<String> {
        let mut gone = Vec::new();
        for (key, p) in &mut self.running {
            if let Ok(Some(status)) = p.child.try_wait() {
                gone.push((
                    key.clone(),
                    format!("{} exited on its own: {status}", p.name),
                ));
            }
        }
        for (key, _) in &gone {
            self.running.remove(key);
        }
        let what: Vec<String> = gone.into_iter().map(|(_, w)| w).collect();
        (!what.is_empty()).then(|| what.join("; "))
    }

    pub(super) async fn stop_all(&mut self) {
        let keys: Vec<String> = self.running.keys().cloned().collect();
        for k in keys {
            self.terminate(&k).await;
        }
    }
}

pub(super) async fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

pub(super) fn postgres_cluster() -> anyhow::Result<String> {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .context("finding the PostgreSQL cluster (/etc/postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    versions
        .into_iter()
        .next()
        .context("no PostgreSQL cluster in /etc/postgresql")
}
