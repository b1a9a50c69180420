//! The open-loop driver: booking `i` is due at `start + i / rate`, whether or not
//! the system kept up, and its latency runs from that due time to the moment its
//! outcome arrives on the tool's own queue bound to the booking-outcome fan-out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::stats::{Percentiles, Recorder, histogram};

/// Something that accepts bookings: the broker (as an upstream system), the gateway,
/// or the raw baseline chain.
pub trait Target: Send + Sync + 'static {
    /// Sends booking number `i` and returns its id once the system has accepted it.
    fn send(&self, i: u64) -> futures_util::future::BoxFuture<'_, anyhow::Result<Uuid>>;
}

/// How much load, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rate: f64,
    pub count: u64,
    /// How long to wait for stragglers after the last send before calling them lost.
    pub drain_timeout: Duration,
}

impl Plan {
    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.count as f64 / self.rate)
    }
}

enum Event {
    Sent {
        id: Uuid,
        due: Instant,
        accepted: Instant,
    },
    SendFailed,
    /// Every send has finished; comes after all their `Sent` events.
    SenderDone,
    Outcome {
        id: Uuid,
        confirmed: bool,
        at: Instant,
    },
}

/// Listens for outcomes on an exclusive queue bound to `routing_keys` of
/// `exchange`; each outcome's booking id is its correlation id, its kind its
/// routing key (`confirmed` in it means success).
pub async fn listen(
    connection: &lapin::Connection,
    exchange: &str,
    routing_keys: &[&str],
) -> anyhow::Result<mpsc::UnboundedReceiver<(Uuid, bool, Instant)>> {
    let channel = connection.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in routing_keys {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "airline-load".into(),
            // The tool's own queue: auto-ack, nothing is lost by it but measurements.
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _channel = channel;
        while let Some(Ok(d)) = consumer.next().await {
            let at = Instant::now();
            let id = d
                .properties
                .correlation_id()
                .as_ref()
                .and_then(|c| Uuid::parse_str(c.as_str()).ok());
            if let Some(id) = id {
                let confirmed = d.routing_key.as_str().contains("confirmed");
                if tx.send((id, confirmed, at)).is_err() {
                    break;
                }
            }
        }
    });
    Ok(rx)
}

/// Runs `plan` against `target`, with a progress bar on a terminal.
pub async fn drive(
    target: Arc<dyn Target>,
    plan: Plan,
    mut outcomes: mpsc::UnboundedReceiver<(Uuid, bool, Instant)>,
    label: &str,
) -> Recorder {
    let start = Instant::now();
    let (events, mut inbox) = mpsc::unbounded_channel::<Event>();
    let sent = Arc::new(AtomicU64::new(0));
    let settled = Arc::new(AtomicU64::new(0));

    {
        let (target, events, sent) = (Arc::clone(&target), events.clone(), Arc::clone(&sent));
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..plan.count {
                let due = start + Duration::from_secs_f64(i as f64 / plan.rate);
                tokio::time::sleep_until(due).await;
                while tasks.try_join_next().is_some() {}
                let (target, events, sent) =
                    (Arc::clone(&target), events.clone(), Arc::clone(&sent));
                // Each send is its own task: a slow send never delays the next one.
                tasks.spawn(async move {
                    match target.send(i).await {
                        Ok(id) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            let accepted = Instant::now();
                            let _ = events.send(Event::Sent { id, due, accepted });
                        }
                        Err(e) => {
                            report_send_error(&e);
                            let _ = events.send(Event::SendFailed);
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            let _ = events.send(Event::SenderDone);
        });
    }
    let forwarder = {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some((id, confirmed, at)) = outcomes.recv().await {
                if events.send(Event::Outcome { id, confirmed, at }).is_err() {
                    break;
                }
            }
        })
    };
    drop(events);

    let bar = progress_bar(plan.count, label);
    let mut recorder = Recorder::default();
    let mut pending: HashMap<Uuid, Instant> = HashMap::new();
    // Outcomes that arrive before their send was recorded (the send's future had
    // not yet been polled to completion).
    let mut early: HashMap<Uuid, (bool, Instant)> = HashMap::new();
    let mut recent = histogram();
    let mut last_tick = Instant::now();
    let mut sender_done = false;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if sender_done && pending.is_empty() {
            break;
        }
        let deadline = drain_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            event = inbox.recv() => match event {
                Some(Event::SenderDone) => {
                    sender_done = true;
                    drain_deadline = Some(Instant::now() + plan.drain_timeout);
                }
                Some(Event::Sent { id, due, accepted }) => {
                    recorder.sent(due - start, accepted.saturating_duration_since(due));
                    if let Some((confirmed, at)) = early.remove(&id) {
                        recorder.settled(confirmed, at.saturating_duration_since(due), at - start);
                        settled.fetch_add(1, Ordering::Relaxed);
                    } else {
                        pending.insert(id, due);
                    }
                }
                Some(Event::SendFailed) => recorder.send_errors += 1,
                Some(Event::Outcome { id, confirmed, at }) => {
                    if let Some(due) = pending.remove(&id) {
                        let latency = at.saturating_duration_since(due);
                        recorder.settled(confirmed, latency, at - start);
                        let _ = recent.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1));
                        settled.fetch_add(1, Ordering::Relaxed);
                    } else {
                        early.insert(id, (confirmed, at));
                    }
                }
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if last_tick.elapsed() >= Duration::from_millis(250) {
            let elapsed = start.elapsed().as_secs_f64().max(1e-3);
            let done = settled.load(Ordering::Relaxed);
            bar.set_position(done);
            bar.set_message(format!(
                "sent {} | {:.0}/s | p99 {:.1} ms",
                sent.load(Ordering::Relaxed),
                done as f64 / elapsed,
                Percentiles::of(&recent).p99
            ));
            recent.reset();
            last_tick = Instant::now();
        }
    }
    forwarder.abort();
    bar.finish_and_clear();
    recorder
}

fn report_send_error(e: &anyhow::Error) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("send failed: {e:#}");
    }
}

fn progress_bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} settled | {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}
