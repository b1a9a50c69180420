//! `airline-notify`: the notification fan-out.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(
        "notify",
        &airline_notify::MIGRATIONS,
        airline_notify::handlers,
        &[],
    )
}
