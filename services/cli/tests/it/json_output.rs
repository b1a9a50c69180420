//! `--json` output is the document alone on standard output, whatever RUST_LOG says
//! (found by a newcomer: `airline dlq list --json` began with sqlx's notices).

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn json_output_is_json_only_with_logs_on() {
    let app = spawn_app().await;
    for args in [
        &["dlq", "list", "--json"][..],
        &["dlq", "drain", "--json"],
        &["audit", "--json"],
        &["saga", "list", "--json"],
        &["apikey", "list", "--json"],
    ] {
        let (code, stdout, stderr) = app.cli(args, &[("RUST_LOG", "info")]);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        let parsed: Result<Value, _> = serde_json::from_str(&stdout);
        assert!(parsed.is_ok(), "{args:?} printed more than JSON:\n{stdout}");
        assert!(
            !stderr.contains("already exists, skipping"),
            "{args:?} logged PostgreSQL's notices at info:\n{stderr}"
        );
    }
}
