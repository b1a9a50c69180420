//! Prometheus metrics, served as text at `/metrics` on the gateway and on every
//! worker. Counters and histograms are updated where things happen; gauges that
//! describe state (outbox backlog, sagas by state, queue and DLQ depths, the
//! dead-letter store) are read when
//! scraped.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::service::Runtime;

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Deliveries by queue, message type and what became of them: `handled`,
    /// `duplicate`, `retried`, `dead_lettered`, `undecodable`.
    pub deliveries: IntCounterVec,
    /// Handler time (transaction included) by queue.
    pub handler_seconds: HistogramVec,
    /// Deliveries handled in one transaction, by queue (batches of two or more).
    pub delivery_batch: HistogramVec,
    /// Bookings from request to terminal state, by outcome.
    pub booking_seconds: HistogramVec,
    /// HTTP requests by route, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request time by route and method.
    pub http_seconds: HistogramVec,
    outbox: IntGaugeVec,
    /// The gauges of the services' descriptors, registered when first read.
    service_gauges: std::sync::Mutex<Vec<(&'static crate::descriptor::Gauge, IntGaugeVec)>>,
    queue_depth: IntGaugeVec,
    dead_letters: IntGaugeVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new_custom(Some("airline".into()), None)?;
    let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let histogram = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<HistogramVec> {
        let h = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )?;
        registry.register(Box::new(h.clone()))?;
        Ok(h)
    };
    let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    Ok(Metrics {
        deliveries: counter(
            "deliveries_total",
            "Deliveries consumed, by queue, message type and outcome.",
            &["queue", "type", "outcome"],
        )?,
        handler_seconds: histogram(
            "handler_duration_seconds",
            "Handler time, transaction included.",
            &["queue"],
        )?,
        delivery_batch: {
            let h = HistogramVec::new(
                HistogramOpts::new(
                    "delivery_batch_size",
                    "Deliveries handled in one transaction (batches of two or more).",
                )
                .buckets(vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
                &["queue"],
            )?;
            registry.register(Box::new(h.clone()))?;
            h
        },
        booking_seconds: histogram(
            "booking_duration_seconds",
            "Bookings from request to their terminal state.",
            &["outcome"],
        )?,
        http_requests: counter(
            "http_requests_total",
            "HTTP requests.",
            &["route", "method", "status"],
        )?,
        http_seconds: histogram(
            "http_request_duration_seconds",
            "HTTP request time.",
            &["route", "method"],
        )?,
        outbox: gauge(
            "outbox",
            "Outbox rows waiting (rows) and the age of the oldest in seconds (oldest_age_seconds), by producer.",
            &["producer", "measure"],
        )?,
        service_gauges: std::sync::Mutex::default(),
        queue_depth: gauge(
            "queue_depth",
            "Messages ready in each queue: the work queues, the booking DLQ (booking.dlq), the shared DLQ (dead-letters) and the delay tiers (retry.<ms>ms).",
            &["queue"],
        )?,
        dead_letters: gauge(
            "dead_letters",
            "Dead letters in the store (airline dlq), by queue and status.",
            &["queue", "status"],
        )?,
        registry,
    })
}

/// The metrics of this process.
pub static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| build().expect("metric names are valid and unique"));

impl Metrics {
    /// Counts one delivery.
    pub fn delivery(&self, queue: &str, message_type: &str, outcome: &str) {
        self.deliveries
            .with_label_values(&[queue, message_type, outcome])
            .inc();
    }

    /// The registered vector of a descriptor's gauge, registered on first use.
    fn service_gauge(&self, gauge: &'static crate::descriptor::Gauge) -> Option<IntGaugeVec> {
        let mut known = self.service_gauges.lock().ok()?;
        if let Some((_, vec)) = known.iter().find(|(g, _)| g.name == gauge.name) {
            return Some(vec.clone());
        }
        let vec = IntGaugeVec::new(Opts::new(gauge.name, gauge.help), gauge.labels).ok()?;
        self.registry.register(Box::new(vec.clone())).ok()?;
        known.push((gauge, vec.clone()));
        Some(vec)
    }

    /// Registers the gauges of `services` (for a dashboard check without a
    /// database).
    pub fn register(&self, services: &[&'static crate::Service]) {
        for g in services.iter().flat_map(|s| s.gauges) {
            let _ = self.service_gauge(g);
        }
    }

    /// Sets one sample on every vector, the registered service gauges included, so
    /// that each is gathered: for the test that holds the Grafana dashboard to the
    /// metrics served (it lives where every service's descriptor is known).
    #[doc(hidden)]
    pub fn touch_all(&self) {
        self.delivery("q", "t", "handled");
        self.handler_seconds.with_label_values(&["q"]).observe(0.1);
        self.delivery_batch.with_label_values(&["q"]).observe(2.0);
        self.booking_seconds
            .with_label_values(&["CONFIRMED"])
            .observe(0.1);
        self.http_requests
            .with_label_values(&["/r", "GET", "200"])
            .inc();
        self.http_seconds
            .with_label_values(&["/r", "GET"])
            .observe(0.1);
        self.outbox.with_label_values(&["p", "rows"]).set(1);
        self.queue_depth.with_label_values(&["q"]).set(1);
        self.dead_letters.with_label_values(&["q", "stored"]).set(1);
        if let Ok(known) = self.service_gauges.lock() {
            for (gauge, vec) in known.iter() {
                let labels = vec!["x"; gauge.labels.len()];
                vec.with_label_values(&labels).set(1);
            }
        }
    }

    /// The names of every metric family registered, prefix included.
    #[must_use]
    pub fn families(&self) -> Vec<String> {
        self.registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect()
    }

    /// Reads the state gauges and renders everything in the text format.
    pub async fn render(&self, rt: &Runtime) -> String {
        self.refresh(rt).await;
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    async fn refresh(&self, rt: &Runtime) {
        let outbox: Result<Vec<(String, i64, f64)>, _> = sqlx::query_as(
            "SELECT producer, count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
               FROM messaging.outbox GROUP BY producer",
        )
        .fetch_all(&rt.pool)
        .await;
        if let Ok(rows) = outbox {
            self.outbox.reset();
            for (producer, rows, age) in rows {
                self.outbox
                    .with_label_values(&[&producer, "rows"])
                    .set(rows);
                #[allow(clippy::cast_possible_truncation)]
                self.outbox
                    .with_label_values(&[&producer, "oldest_age_seconds"])
                    .set(age as i64);
            }
        }
        for service in rt.services() {
            for g in service.gauges {
                let Some(vec) = self.service_gauge(g) else {
                    continue;
                };
                match (g.read)(&rt.pool).await {
                    Ok(rows) => {
                        vec.reset();
                        for (labels, n) in rows {
                            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                            vec.with_label_values(&labels).set(n);
                        }
                    }
                    Err(e) => tracing::debug!(gauge = g.name, error = %e, "could not read a gauge"),
                }
            }
        }
        // The table is the messaging schema's; the store's tools (airline-dead-letters)
        // are not linked here. Every status of a queue is reported, zeros included.
        let dead_letters: Result<Vec<(String, i64, i64, i64)>, _> = sqlx::query_as(
            "SELECT queue,
                    count(*) FILTER (WHERE status = 'stored'),
                    count(*) FILTER (WHERE status = 'replayed'),
                    count(*) FILTER (WHERE status = 'discarded')
               FROM messaging.dead_letters GROUP BY queue",
        )
        .fetch_all(&rt.pool)
        .await;
        if let Ok(rows) = dead_letters {
            self.dead_letters.reset();
            for (queue, stored, replayed, discarded) in rows {
                for (status, n) in [
                    ("stored", stored),
                    ("replayed", replayed),
                    ("discarded", discarded),
                ] {
                    self.dead_letters
                        .with_label_values(&[&queue, status])
                        .set(n);
                }
            }
        }
        if let Ok(channel) = rt.broker.create_channel().await {
            // Every queue of the topology, by logical name: the work queues, the
            // booking DLQ, the shared DLQ and the delay tiers.
            let queues = crate::topology::declared_queues(&rt.names, &rt.config);
            for name in queues {
                let logical = rt.names.strip(&name).unwrap_or(&name).to_owned();
                let declared = channel
                    .queue_declare(
                        name.as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await;
                match declared {
                    Ok(q) => self
                        .queue_depth
                        .with_label_values(&[&logical])
                        .set(i64::from(q.message_count())),
                    // A failed passive declare closes the channel: stop here.
                    Err(_) => break,
                }
            }
            let _ = channel.close(200, "metrics read".into()).await;
        }
    }
}
