//! Several deliveries in one transaction, against the real PostgreSQL server: a
//! failing message is rolled back to its savepoint, the others commit.

use airline_contracts::Message;
use airline_contracts::messages::ReleaseSeat;
use airline_runtime::testing::{TestDatabase, incoming_with};
use airline_runtime::{Handler, HandlerError, Incoming, Outcome, async_trait, process_batch};
use sqlx::PgConnection;
use uuid::Uuid;

/// Records each booking it sees, then refuses the one it was told to refuse (after
/// its write, which must not survive) and sends one message for each of the others.
struct Recording {
    refuse: Uuid,
}

#[async_trait]
impl Handler for Recording {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let booking = msg.message.booking_id();
        sqlx::query("INSERT INTO seen (booking_id) VALUES ($1)")
            .bind(booking)
            .execute(&mut *tx)
            .await?;
        if booking == self.refuse {
            return Err(HandlerError::Rejected("refused on purpose".into()));
        }
        Ok(vec![msg.message.clone()])
    }
}

fn release(booking: Uuid) -> Message {
    Message::ReleaseSeat(ReleaseSeat {
        booking_id: booking,
        flight_id: Uuid::nil(),
    })
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .expect("a count")
}

#[tokio::test]
async fn a_failing_message_is_rolled_back_alone_and_the_rest_commit_once() {
    let db = TestDatabase::create(&[]).await.expect("a test database");
    sqlx::raw_sql("CREATE TABLE seen (booking_id uuid NOT NULL)")
        .execute(db.pool())
        .await
        .expect("table");
    let bookings: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let handler = Recording {
        refuse: bookings[2],
    };
    let msgs: Vec<Incoming> = bookings
        .iter()
        .map(|b| incoming_with(release(*b), &format!("m-{b}"), 1))
        .collect();
    let refs: Vec<&Incoming> = msgs.iter().collect();

    let results = process_batch(db.pool(), "test:q", "test", &handler, &refs)
        .await
        .expect("the batch commits");
    assert_eq!(results.len(), 5);
    for (i, result) in results.iter().enumerate() {
        match (i, result) {
            (2, Err(HandlerError::Rejected(text))) => assert_eq!(text, "refused on purpose"),
            (2, other) => panic!("the refused message: {other:?}"),
            (_, Ok(Outcome::Handled(pending))) => assert_eq!(pending.len(), 1),
            (_, other) => panic!("message {i}: {other:?}"),
        }
    }
    // The refused message left nothing: not its write, not its inbox row (so its
    // retry is handled afresh), not an outbox row.
    assert_eq!(count(&db, "SELECT count(*) FROM seen").await, 4);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM messaging.inbox WHERE consumer = 'test:q'"
        )
        .await,
        4
    );
    assert_eq!(count(&db, "SELECT count(*) FROM messaging.outbox").await, 4);
    let refused_seen: i64 = sqlx::query_scalar("SELECT count(*) FROM seen WHERE booking_id = $1")
        .bind(bookings[2])
        .fetch_one(db.pool())
        .await
        .expect("a count");
    assert_eq!(refused_seen, 0);

    // The same deliveries again (a redelivery after a lost ack): duplicates, and the
    // refused one is handled again.
    let results = process_batch(db.pool(), "test:q", "test", &handler, &refs)
        .await
        .expect("the second batch commits");
    for (i, result) in results.iter().enumerate() {
        match (i, result) {
            (2, Err(HandlerError::Rejected(_))) => {}
            (_, Ok(Outcome::Duplicate)) => {}
            (_, other) => panic!("message {i} delivered again: {other:?}"),
        }
    }
    assert_eq!(count(&db, "SELECT count(*) FROM seen").await, 4);
    assert_eq!(
        count(&db, "SELECT sum(duplicates) FROM messaging.inbox").await,
        4
    );
}
