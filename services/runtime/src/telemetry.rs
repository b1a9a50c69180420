//! Logging: `tracing` with structured fields to standard error, filtered by
//! `RUST_LOG` (default `info,sqlx=warn,lapin=warn,amq_protocol=warn`).
//!
//! Logs never go to standard output, which belongs to what a command prints (its
//! `--json` document, a key). PostgreSQL's notices (`schema "messaging" already
//! exists, skipping`, at every start) are logged at warn only, even under
//! `RUST_LOG=info`, unless `RUST_LOG` names sqlx itself.

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn";

/// The filter for `RUST_LOG` (or the default when it is unset or unreadable).
fn filter(rust_log: Option<&str>) -> EnvFilter {
    let Some(spec) = rust_log.filter(|s| !s.trim().is_empty()) else {
        return EnvFilter::new(DEFAULT_FILTER);
    };
    let filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    if spec.contains("sqlx") {
        return filter;
    }
    match "sqlx::postgres::notice=warn".parse() {
        Ok(quiet_notices) => filter.add_directive(quiet_notices),
        Err(_) => filter,
    }
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    init_with(&[]);
}

/// [`init`] with more directives (e.g. `lapin::channel=off` for a command that
/// looks for queues that may not exist: the client logs each "not found" as an
/// error), unless `RUST_LOG` names the same target.
pub fn init_with(extra: &[&str]) {
    use std::io::IsTerminal as _;
    let rust_log = std::env::var("RUST_LOG").ok();
    let mut filter = filter(rust_log.as_deref());
    for directive in extra {
        let target = directive.split('=').next().unwrap_or(directive);
        if rust_log.as_deref().is_some_and(|r| r.contains(target)) {
            continue;
        }
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours on a terminal only, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_stay_quiet_unless_sqlx_is_asked_for() {
        assert!(filter(None).to_string().contains("sqlx=warn"));
        let info = filter(Some("info")).to_string();
        assert!(info.contains("sqlx::postgres::notice=warn"), "{info}");
        let asked = filter(Some("info,sqlx=debug")).to_string();
        assert!(!asked.contains("notice"), "{asked}");
    }
}
