//! `airline-notify`: the notification fan-out.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(&airline_notify::SERVICE)
}
