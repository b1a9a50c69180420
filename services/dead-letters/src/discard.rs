//! Resolving without replaying: discarding (archiving) dead letters, and purging
//! resolved ones after the retention period.

use sqlx::{PgPool, QueryBuilder};

use crate::Refusal;
use crate::filter::{Filter, Selection, matching};

/// Discards (archives) stored dead letters; they are kept for the retention
/// period. Returns how many.
///
/// # Errors
/// [`Refusal`] when the one dead letter is missing or not stored.
pub async fn discard(pool: &PgPool, selection: &Selection, by: &str) -> anyhow::Result<u64> {
    let n = match selection {
        Selection::One(id) => {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM messaging.dead_letters WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            match status.as_deref() {
                None => return Err(Refusal::NotFound(*id).into()),
                Some("stored") => {}
                Some(other) => {
                    return Err(Refusal::Conflict(format!(
                        "dead letter {id} is {other}; only a stored one can be discarded"
                    ))
                    .into());
                }
            }
            sqlx::query(
                "UPDATE messaging.dead_letters
                    SET status = 'discarded', discarded_at = now(), discarded_by = $2,
                        resolved_at = now()
                  WHERE id = $1 AND status = 'stored'",
            )
            .bind(id)
            .bind(by)
            .execute(pool)
            .await?
            .rows_affected()
        }
        Selection::Matching(filter) => {
            let filter = Filter {
                status: Some("stored".into()),
                ..filter.clone()
            };
            let mut query = QueryBuilder::new(
                "UPDATE messaging.dead_letters
                    SET status = 'discarded', discarded_at = now(), discarded_by = ",
            );
            query
                .push_bind(by.to_owned())
                .push(", resolved_at = now() WHERE ");
            matching(&mut query, &filter);
            query.build().execute(pool).await?.rows_affected()
        }
    };
    Ok(n)
}

/// Deletes replayed and discarded dead letters resolved before `older_than` ago.
/// Returns how many.
///
/// # Errors
/// Database errors.
pub async fn purge(pool: &PgPool, older_than: std::time::Duration) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM messaging.dead_letters
          WHERE status <> 'stored' AND resolved_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}
