//! `airline-catalog`: the flights and seats worker.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(
        "catalog",
        &airline_catalog::MIGRATIONS,
        airline_catalog::handlers,
        &[],
    )
}
