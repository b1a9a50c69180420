//! `airline-gateway`: the HTTP API.

fn main() -> std::process::ExitCode {
    airline_runtime::service::main_with("airline-gateway", |rt, shutdown| async move {
        let listener = airline_runtime::service::bind(&rt.config).await?;
        airline_gateway::migrate(&rt).await?;
        tracing::info!(addr = %rt.config.http.addr, "gateway listening");
        airline_gateway::run(&rt, listener, shutdown).await
    })
}
