//! `airline-booking`: the booking saga orchestrator.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(
        "booking",
        &airline_booking::MIGRATIONS,
        airline_booking::handlers,
        airline_booking::JOBS,
    )
}
