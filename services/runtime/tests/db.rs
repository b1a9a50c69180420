//! The database connection against the real PostgreSQL server.

use airline_runtime::db;
use sqlx::Connection as _;

fn server() -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/airline".into());
    base.rsplit_once('/')
        .map_or(base.clone(), |(server, _)| server.to_owned())
}

/// Drops the database when the test ends, also when it fails.
struct Dropped(String);

impl Drop for Dropped {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut admin) =
                    sqlx::PgConnection::connect(&format!("{}/postgres", server())).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(&sql).execute(&mut admin).await;
                }
            });
        })
        .join();
    }
}

/// Binaries started together on a fresh database all create it: none fails (the
/// README's "each service as its own process" start, found failing by a newcomer).
#[tokio::test]
async fn processes_starting_at_once_all_get_the_new_database() {
    let name = format!("airline_dbtest_{}", uuid::Uuid::new_v4().simple());
    let _dropped = Dropped(name.clone());
    let url = format!("{}/{name}", server());
    let starts = (0..8).map(|_| db::connect(&url, 1));
    for outcome in futures_util::future::join_all(starts).await {
        assert!(outcome.is_ok(), "{:#}", outcome.unwrap_err());
    }
}
