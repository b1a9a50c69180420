//! `airline-payment`: charges and refunds against the payment provider.

fn main() -> std::process::ExitCode {
    airline_runtime::service::worker_main(&airline_payment::SERVICE)
}
