//! `airline-loyalty`: the points ledger.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(
        "loyalty",
        &airline_loyalty::MIGRATIONS,
        airline_loyalty::handlers,
        &[],
    )
}
