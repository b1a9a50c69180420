//! `airline audit` finds the books balanced after real sagas, and names what breaks.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_audit_passes_on_real_sagas_and_names_a_broken_invariant() {
    let app = spawn_app().await;
    let flight = app.create_flight(3).await;
    let full = app.create_flight(0).await;
    for (f, token) in [
        (flight, "tok_visa"),
        (flight, "tok_chargeDeclined"),
        (full, "tok_visa"),
    ] {
        let booking = app.book(f, "cust-audit", token).await;
        app.settled(booking).await;
    }
    app.eventually("the points", || async {
        (app.get_json("/v1/loyalty/cust-audit").await["points"] == 120).then_some(())
    })
    .await;

    let report = airline::audit::audit(&app.rt.pool)
        .await
        .expect("audit runs");
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(
        (
            report.stats.confirmed,
            report.stats.failed,
            report.stats.in_flight
        ),
        (1, 2, 0)
    );

    sqlx::query("UPDATE catalog.flights SET seats_left = seats_left + 1 WHERE id = $1")
        .bind(flight)
        .execute(&app.rt.pool)
        .await
        .expect("a seat out of nowhere");
    sqlx::query("DELETE FROM loyalty.ledger WHERE customer_id = 'cust-audit'")
        .execute(&app.rt.pool)
        .await
        .expect("points lost");
    let report = airline::audit::audit(&app.rt.pool)
        .await
        .expect("audit runs");
    let checks: Vec<&str> = report.violations.iter().map(|v| v.check).collect();
    assert_eq!(checks, ["seats", "loyalty"], "{:?}", report.violations);
    assert!(report.violations[0].detail.contains(&flight.to_string()));
    assert!(report.violations[1].detail.contains("cust-audit"));
    assert!(airline::audit::render(&report).contains("seats     1 violation(s)"));
}
