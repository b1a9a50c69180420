//! `airline-gateway`: the HTTP API.

fn main() -> std::process::ExitCode {
    let service = &airline_gateway::SERVICE;
    airline_runtime::service::main_with("airline-gateway", &[service], |rt, shutdown| async move {
        let listener = airline_runtime::service::bind(&rt.config).await?;
        tracing::info!(addr = %rt.config.http.addr, "gateway listening");
        airline_gateway::run(&rt, listener, shutdown).await
    })
}
