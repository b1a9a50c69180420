//! `airline-catalog`: the flights and seats worker.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(&airline_catalog::SERVICE)
}
