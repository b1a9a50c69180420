//! `airline-booking`: the booking saga orchestrator.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(&airline_booking::SERVICE)
}
