//! Which dead letters an operation applies to, and the SQL conditions that pick
//! them: built with [`QueryBuilder`], each value bound where it is used, so a
//! query's later parameters never depend on how many the filter took.

use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Logical queue name.
    pub queue: Option<String>,
    /// Message type, with or without its `.vN`.
    pub message_type: Option<String>,
    /// Failed (or drained) at or after.
    pub since: Option<OffsetDateTime>,
    /// A group id.
    pub group: Option<String>,
    /// `stored` (the default), `replayed` or `discarded`.
    pub status: Option<String>,
}

/// Which dead letters to replay or discard.
#[derive(Debug, Clone)]
pub enum Selection {
    /// One.
    One(i64),
    /// Those matching a filter (a group, a queue, ...).
    Matching(Filter),
}

/// Pushes the conditions of `filter` (no `WHERE`) onto `query`: the status (`stored`
/// unless the filter names another), then only the fields the filter sets.
pub(crate) fn matching(query: &mut QueryBuilder<'_, Postgres>, filter: &Filter) {
    query
        .push("status = ")
        .push_bind(filter.status.clone().unwrap_or_else(|| "stored".into()));
    if let Some(queue) = &filter.queue {
        query.push(" AND queue = ").push_bind(queue.clone());
    }
    if let Some(message_type) = &filter.message_type {
        // `booking.requested` matches every version, `booking.requested.v1` one.
        query
            .push(" AND (message_type = ")
            .push_bind(message_type.clone())
            .push(r" OR regexp_replace(message_type, '\.v[0-9]+$', '') = ")
            .push_bind(message_type.clone())
            .push(")");
    }
    if let Some(since) = filter.since {
        query
            .push(" AND COALESCE(failed_at, drained_at) >= ")
            .push_bind(since);
    }
    if let Some(group) = &filter.group {
        query.push(" AND group_id = ").push_bind(group.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(filter: &Filter) -> String {
        let mut query = QueryBuilder::new("SELECT id FROM messaging.dead_letters WHERE ");
        matching(&mut query, filter);
        query.push(" LIMIT ").push_bind(10_i64);
        query.sql().to_owned()
    }

    #[test]
    fn an_empty_filter_picks_stored_dead_letters() {
        assert_eq!(
            sql(&Filter::default()),
            "SELECT id FROM messaging.dead_letters WHERE status = $1 LIMIT $2"
        );
    }

    #[test]
    fn only_the_fields_set_are_conditions_and_later_parameters_follow_them() {
        let filter = Filter {
            queue: Some("payment.collect".into()),
            message_type: Some("payment.collect".into()),
            since: Some(OffsetDateTime::UNIX_EPOCH),
            group: Some("abc".into()),
            status: Some("replayed".into()),
        };
        assert_eq!(
            sql(&filter),
            "SELECT id FROM messaging.dead_letters WHERE status = $1 AND queue = $2 \
             AND (message_type = $3 OR regexp_replace(message_type, '\\.v[0-9]+$', '') = $4) \
             AND COALESCE(failed_at, drained_at) >= $5 AND group_id = $6 LIMIT $7"
        );
        let only_group = Filter {
            group: Some("abc".into()),
            ..Filter::default()
        };
        assert_eq!(
            sql(&only_group),
            "SELECT id FROM messaging.dead_letters WHERE status = $1 AND group_id = $2 LIMIT $3"
        );
    }
}
