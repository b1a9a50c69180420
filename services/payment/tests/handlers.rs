//! Collect and refund against a database of their own and the simulated provider,
//! without a broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use airline_contracts::messages::{CollectPayment, RefundPayment};
use airline_contracts::topology::COLLECT_PAYMENT;
use airline_contracts::{FailureReason, Message, PaymentToken};
use airline_payment::provider::{
    Charge, ChargeRequest, PaymentProvider, ProviderError, SimulatedProvider,
};
use airline_payment::{Payments, SERVICE};
use airline_runtime::testing::{TestDatabase, incoming};
use airline_runtime::{Config, HandlerError, async_trait};
use uuid::Uuid;

/// The simulated provider, counting the calls that reach it.
#[derive(Debug, Default)]
struct Counting {
    inner: SimulatedProvider,
    charges: AtomicU32,
    refunds: AtomicU32,
}

#[async_trait]
impl PaymentProvider for Counting {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Charge, ProviderError> {
        self.charges.fetch_add(1, Ordering::SeqCst);
        self.inner.charge(request).await
    }

    async fn refund(&self, charge_id: &str, amount: i64) -> Result<String, ProviderError> {
        self.refunds.fetch_add(1, Ordering::SeqCst);
        self.inner.refund(charge_id, amount).await
    }
}

struct Fixture {
    db: TestDatabase,
    provider: Arc<Counting>,
    payments: Payments,
}

async fn fixture() -> Fixture {
    let db = TestDatabase::create(&[&SERVICE])
        .await
        .expect("a test database");
    let provider = Arc::new(Counting::default());
    let payments = Payments {
        provider: provider.clone(),
        fail_collect: false,
        fail_refund: false,
    };
    Fixture {
        db,
        provider,
        payments,
    }
}

impl Fixture {
    fn charges(&self) -> u32 {
        self.provider.charges.load(Ordering::SeqCst)
    }

    fn refunds(&self) -> u32 {
        self.provider.refunds.load(Ordering::SeqCst)
    }

    async fn handle(&self, msg: Message) -> Result<Message, HandlerError> {
        let mut out = self.db.handle(&self.payments, &incoming(msg)).await?;
        assert_eq!(out.len(), 1, "{out:?}");
        Ok(out.remove(0))
    }

    async fn status(&self, booking: Uuid) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM payment.payments WHERE booking_id = $1")
            .bind(booking)
            .fetch_optional(self.db.pool())
            .await
            .expect("read")
    }
}

fn collect(booking: Uuid, token: &str) -> Message {
    Message::CollectPayment(CollectPayment {
        booking_id: booking,
        customer_id: "cust-1".into(),
        payment_token: PaymentToken::parse(token).expect("a token"),
        amount: 120,
        currency: "EUR".into(),
    })
}

fn refund(booking: Uuid) -> Message {
    Message::RefundPayment(RefundPayment {
        booking_id: booking,
    })
}

#[tokio::test]
async fn tok_visa_is_collected() {
    let f = fixture().await;
    let booking = Uuid::new_v4();
    let out = f
        .handle(collect(booking, "tok_visa"))
        .await
        .expect("handled");
    match out {
        Message::PaymentCollected(m) => {
            assert_eq!(m.booking_id, booking);
            assert_eq!((m.amount, m.currency.as_str(), m.attempts), (120, "EUR", 1));
            assert!(m.charge_id.starts_with("ch_"), "{}", m.charge_id);
        }
        other => panic!("expected payment collected, got {other:?}"),
    }
    assert_eq!(f.status(booking).await.as_deref(), Some("captured"));
}

#[tokio::test]
async fn tok_charge_declined_is_declined() {
    let f = fixture().await;
    for (token, code) in [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ] {
        let booking = Uuid::new_v4();
        let out = f.handle(collect(booking, token)).await.expect("handled");
        assert!(
            matches!(&out, Message::PaymentDeclined(m)
                if m.decline_code == code && m.reason == FailureReason::PaymentDeclined),
            "{out:?}"
        );
        assert_eq!(f.status(booking).await.as_deref(), Some("declined"));
    }
}

#[tokio::test]
async fn a_duplicate_collect_charges_once() {
    let f = fixture().await;
    let booking = Uuid::new_v4();
    let first = f.handle(collect(booking, "tok_visa")).await.expect("first");
    // Another message id for the same booking: the first outcome, no second charge.
    let again = f.handle(collect(booking, "tok_visa")).await.expect("again");
    assert_eq!(first, again);
    assert_eq!(f.charges(), 1);
    // A decline is answered again the same way.
    let declined = Uuid::new_v4();
    let first = f
        .handle(collect(declined, "tok_chargeDeclined"))
        .await
        .expect("first");
    let again = f
        .handle(collect(declined, "tok_chargeDeclined"))
        .await
        .expect("again");
    assert_eq!(first, again);
    assert_eq!(f.charges(), 2);
}

#[tokio::test]
async fn a_refund_is_made_once() {
    let f = fixture().await;
    let booking = Uuid::new_v4();
    f.handle(collect(booking, "tok_visa"))
        .await
        .expect("collected");
    let first = f.handle(refund(booking)).await.expect("refunded");
    assert!(
        matches!(&first, Message::PaymentRefunded(m) if m.amount == 120 && m.refund_id.is_some()),
        "{first:?}"
    );
    let again = f.handle(refund(booking)).await.expect("refunded again");
    assert_eq!(first, again);
    assert_eq!(f.refunds(), 1);
    assert_eq!(f.status(booking).await.as_deref(), Some("refunded"));
}

#[tokio::test]
async fn a_refund_before_any_collect_stops_a_later_charge() {
    let f = fixture().await;
    let booking = Uuid::new_v4();
    let out = f.handle(refund(booking)).await.expect("refunded");
    assert!(
        matches!(&out, Message::PaymentRefunded(m) if m.amount == 0 && m.refund_id.is_none()),
        "{out:?}"
    );
    let out = f
        .handle(collect(booking, "tok_visa"))
        .await
        .expect("answered");
    assert!(
        matches!(&out, Message::PaymentDeclined(m) if m.reason == FailureReason::PaymentFailed),
        "{out:?}"
    );
    assert_eq!((f.charges(), f.refunds()), (0, 0));
}

#[tokio::test]
async fn a_provider_failure_is_transient_and_leaves_nothing_claimed() {
    let f = fixture().await;
    let booking = Uuid::new_v4();
    for _ in 0..2 {
        let err = f
            .handle(collect(booking, "tok_flaky"))
            .await
            .expect_err("provider down");
        assert!(matches!(err, HandlerError::Transient(_)), "{err:?}");
        assert_eq!(f.status(booking).await, None);
    }
    let out = f
        .handle(collect(booking, "tok_flaky"))
        .await
        .expect("third call");
    assert!(matches!(out, Message::PaymentCollected(_)), "{out:?}");
}

#[tokio::test]
async fn bad_commands_are_refused_for_good() {
    let f = fixture().await;
    let handler =
        f.db.handler(&SERVICE, &COLLECT_PAYMENT, &Config::default())
            .expect("the handler");
    let Message::CollectPayment(mut cmd) = collect(Uuid::new_v4(), "tok_visa") else {
        unreachable!()
    };
    cmd.amount = 0;
    let err =
        f.db.handle(handler.as_ref(), &incoming(Message::CollectPayment(cmd)))
            .await
            .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
    let failing = Payments {
        fail_collect: true,
        ..f.payments.clone()
    };
    let booking = Uuid::new_v4();
    let out =
        f.db.handle(&failing, &incoming(collect(booking, "tok_visa")))
            .await
            .expect("answered");
    assert!(
        matches!(out.as_slice(), [Message::PaymentDeclined(m)] if m.reason == FailureReason::PaymentFailed),
        "{out:?}"
    );
    assert_eq!(f.charges(), 0);
}
