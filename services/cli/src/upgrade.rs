//! `airline migrate`'s broker half: removes what the old layout (a DLQ and a set of
//! retry tiers per work queue) declared under this prefix.
//!
//! - An old DLQ is first unbound from the dead-letter exchange (nothing new reaches
//!   it), its dead letters are moved into the shared DLQ (published with confirms,
//!   each acked only after its confirm: nothing is lost, and a copy that is in both
//!   is stored once by the drain, whose key is the same), then it is deleted if
//!   empty.
//! - An old retry tier is deleted if empty. One that still holds retries is kept:
//!   they go back to their work queue on their own when their delay is over, and the
//!   next `airline migrate` deletes it.
//!
//! "Not found" is fine: a queue the old layout never declared, or already removed.
//! Run it once every process runs this version: only the old version publishes to
//! the old tiers, and a retry it parks there between the count and the delete
//! (quorum queues have no `if-empty` delete) would be lost.

use airline_contracts::topology::{DEAD_LETTER_EXCHANGE, ORIGIN_QUEUE_HEADER};
use airline_runtime::Runtime;
use airline_runtime::broker::{Envelope, bounded, confirm_channel, publish_on, with_header};
use airline_runtime::topology::{OldQueue, old_layout_queues};
use anyhow::Context as _;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde::Serialize;

/// Dead letters moved per round of confirms.
const MOVE_BATCH: usize = 100;

/// What the removal of the old layout did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpgradeReport {
    /// Old queues deleted (broker names).
    pub deleted: Vec<String>,
    /// Old DLQs whose dead letters were moved to the shared DLQ, with how many.
    pub moved: Vec<(String, u64)>,
    /// Old queues kept, with their messages and what to do.
    pub kept: Vec<(String, u64, String)>,
}

impl UpgradeReport {
    /// The report for a person, a line each; empty when there was nothing to do.
    #[must_use]
    pub fn render(&self, shared: &str) -> String {
        let mut out = String::new();
        for (q, n) in &self.moved {
            out.push_str(&format!(
                "moved {n} dead letter(s) from the old DLQ {q} to {shared} (drain them with airline dlq drain)\n"
            ));
        }
        if !self.deleted.is_empty() {
            out.push_str(&format!(
                "deleted {} queue(s) of the old layout: {}\n",
                self.deleted.len(),
                self.deleted.join(", ")
            ));
        }
        for (q, n, what) in &self.kept {
            out.push_str(&format!("kept {q} ({n} message(s)): {what}\n"));
        }
        out
    }
}

/// Removes the old layout's queues of this prefix (see the module's docs).
///
/// # Errors
/// Broker errors other than "not found" and "not empty"; what was moved stays
/// moved.
pub async fn remove_old_layout(rt: &Runtime) -> anyhow::Result<UpgradeReport> {
    let mut report = UpgradeReport::default();
    for old in old_layout_queues(&rt.names, &rt.config) {
        let Some(waiting) = depth(rt, &old.name).await? else {
            continue;
        };
        match old.tier {
            None => {
                let channel = bounded("opening a channel", rt.broker.create_channel()).await??;
                channel
                    .queue_unbind(
                        old.name.as_str().into(),
                        rt.names.resolve(DEAD_LETTER_EXCHANGE).into(),
                        rt.names.resolve(old.queue.name).into(),
                        FieldTable::default(),
                    )
                    .await
                    .with_context(|| format!("unbinding {}", old.name))?;
                let _ = channel.close(200, "unbound".into()).await;
                if waiting > 0 {
                    let n = move_dead_letters(rt, &old).await?;
                    report.moved.push((old.name.clone(), n));
                }
            }
            Some(delay) if waiting > 0 => {
                report.kept.push((
                    old.name.clone(),
                    waiting,
                    format!(
                        "retries waiting to go back to {} (within {} ms); run airline migrate again after that",
                        rt.names.resolve(old.queue.name),
                        delay.as_millis() * 6 / 5
                    ),
                ));
                continue;
            }
            Some(_) => {}
        }
        if delete_if_empty(rt, &old.name).await? {
            report.deleted.push(old.name);
        } else {
            let left = depth(rt, &old.name).await?.unwrap_or_default();
            report.kept.push((
                old.name,
                left,
                "not empty (a process of the old version still dead-letters into it?): run airline migrate again once every process runs this version".into(),
            ));
        }
    }
    Ok(report)
}

/// Messages in `queue`, or `None` if it does not exist (on a channel of its own:
/// a failed passive declare closes its channel).
async fn depth(rt: &Runtime, queue: &str) -> anyhow::Result<Option<u64>> {
    let channel = bounded("opening a channel", rt.broker.create_channel()).await??;
    let declared = bounded(
        "looking for a queue",
        channel.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    match declared {
        Ok(q) => {
            let _ = channel.close(200, "counted".into()).await;
            Ok(Some(u64::from(q.message_count())))
        }
        Err(e) if is_code(&e, 404) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking for {queue}")),
    }
}

/// Deletes `queue` if it holds no message; `false` if it holds some (a queue that
/// no longer exists counts as deleted). RabbitMQ refuses `queue.delete` with
/// `if-empty` on quorum queues (NOT_IMPLEMENTED, closing the connection), so the
/// queue is counted first: callers make sure nothing can reach it any more (an old
/// DLQ is unbound first; an old tier is only published to by the old version).
async fn delete_if_empty(rt: &Runtime, queue: &str) -> anyhow::Result<bool> {
    match depth(rt, queue).await? {
        None => return Ok(true),
        Some(n) if n > 0 => return Ok(false),
        Some(_) => {}
    }
    let channel = bounded("opening a channel", rt.broker.create_channel()).await??;
    let deleted = bounded(
        "deleting a queue",
        channel.queue_delete(queue.into(), QueueDeleteOptions::default()),
    )
    .await?;
    match deleted {
        Ok(_) => {
            let _ = channel.close(200, "deleted".into()).await;
            Ok(true)
        }
        Err(e) if is_code(&e, 404) => Ok(true),
        Err(e) => Err(e).with_context(|| format!("deleting {queue}")),
    }
}

fn is_code(e: &lapin::Error, code: u16) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => p.get_id() == code,
        _ => false,
    }
}

/// Moves every dead letter of an old DLQ into the shared DLQ, unchanged but for
/// `x-origin-queue` naming the old DLQ's work queue, each acked after its
/// publisher confirm. Returns how many were moved.
async fn move_dead_letters(rt: &Runtime, old: &OldQueue) -> anyhow::Result<u64> {
    let channel: Channel = confirm_channel(&rt.broker.connection()).await?;
    let shared = rt.names.dead_letters();
    let mut moved = 0;
    loop {
        let mut batch = Vec::with_capacity(MOVE_BATCH);
        let mut last_tag = None;
        while batch.len() < MOVE_BATCH {
            let got = bounded(
                "reading an old DLQ",
                channel.basic_get(old.name.as_str().into(), BasicGetOptions { no_ack: false }),
            )
            .await?
            .with_context(|| format!("reading {}", old.name))?;
            let Some(got) = got else { break };
            let d = got.delivery;
            last_tag = Some(d.delivery_tag);
            // In the shared DLQ its routing key is the DLQ's name: the header says
            // where it died (the old DLQ's queue; a drain's key leaves it out, so a
            // copy that is in both DLQs is still stored once).
            let properties = with_header(d.properties, ORIGIN_QUEUE_HEADER, old.queue.name);
            batch.push(Envelope {
                exchange: String::new(),
                routing_key: shared.clone(),
                properties,
                body: d.data,
            });
        }
        let Some(tag) = last_tag else { break };
        publish_on(&channel, &batch)
            .await
            .with_context(|| format!("moving dead letters from {} to {shared}", old.name))?;
        bounded(
            "acking",
            channel.basic_ack(tag, BasicAckOptions { multiple: true }),
        )
        .await?
        .with_context(|| format!("acking {}", old.name))?;
        moved += batch.len() as u64;
    }
    let _ = channel.close(200, "moved".into()).await;
    Ok(moved)
}
