//! Logging: `tracing` with structured fields, filtered by `RUST_LOG` (default
//! `info,sqlx=warn,lapin=warn,amq_protocol=warn`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,amq_protocol=warn"));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours on a terminal only, not in log files.
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(true)
        .try_init();
}
