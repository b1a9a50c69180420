//! `airline-loyalty`: the points ledger.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(&airline_loyalty::SERVICE)
}
