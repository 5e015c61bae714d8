//! Counters and histograms for Prometheus, served at `/metrics`.
//!
//! One registry for the process: files, sessions and deliveries are counted
//! where they happen, in every stage and source, and a handle threaded
//! through each would say nothing more. Labels carry only names from the
//! config (source, feed, destination, schedule) and dropgate's own codes
//! (state, reason, problem code, audit action): never a file name, patient
//! data or anything else a partner wrote.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabel {
    pub feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessedLabels {
    /// `-` when no feed matched the file.
    pub feed: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `export`, `route` or `receipt`.
    pub kind: String,
    pub destination: String,
    /// `delivered` or `failed` (a failed delivery is tried again later).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub source: String,
    /// `ok` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub schedule: String,
    pub outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// From 10 ms to about 3 hours.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 3.0, 12))
}

pub struct Metrics {
    pub files_received: Family<SourceLabel, Counter>,
    pub bytes_received: Family<SourceLabel, Counter>,
    pub landing_seconds: Histograms<SourceLabel>,
    pub files_processed: Family<ProcessedLabels, Counter>,
    pub quarantines: Family<ReasonLabel, Counter>,
    pub rows: Family<FeedLabel, Counter>,
    pub records: Family<FeedLabel, Counter>,
    pub problems: Family<CodeLabel, Counter>,
    pub processing_seconds: Histograms<FeedLabel>,
    pub audit_events: Family<ActionLabel, Counter>,
    pub sftp_sessions: Gauge,
    /// 1 while the spool has no room for new files.
    pub spool_full: Gauge,
    pub polls: Family<PollLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_retries: Family<DestinationLabel, Counter>,
    pub schedule_runs: Family<RunLabels, Counter>,
    registry: Registry,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dropgate");
        let m = Metrics {
            files_received: Family::default(),
            bytes_received: Family::default(),
            landing_seconds: Family::new_with_constructor(latency_buckets),
            files_processed: Family::default(),
            quarantines: Family::default(),
            rows: Family::default(),
            records: Family::default(),
            problems: Family::default(),
            processing_seconds: Family::new_with_constructor(latency_buckets),
            audit_events: Family::default(),
            sftp_sessions: Gauge::default(),
            spool_full: Gauge::default(),
            polls: Family::default(),
            deliveries: Family::default(),
            delivery_retries: Family::default(),
            schedule_runs: Family::default(),
            registry: Registry::default(),
        };
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build
            .get_or_create(&vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )])
            .set(1);
        let r = &mut registry;
        r.register("build_info", "The running version", build);
        r.register(
            "files_received",
            "Files made durable and recorded `received`, by source",
            m.files_received.clone(),
        );
        r.register_with_unit(
            "received",
            "Bytes of files received, by source",
            Unit::Bytes,
            m.bytes_received.clone(),
        );
        r.register_with_unit(
            "landing",
            "Time to land a file: copy, sync and record it",
            Unit::Seconds,
            m.landing_seconds.clone(),
        );
        r.register(
            "files_processed",
            "Files settled, by feed and final state",
            m.files_processed.clone(),
        );
        r.register(
            "quarantines",
            "Files quarantined, by reason",
            m.quarantines.clone(),
        );
        r.register("rows", "Data rows read from loaded files", m.rows.clone());
        r.register(
            "records",
            "Records written from loaded files",
            m.records.clone(),
        );
        r.register(
            "problems",
            "Validation problems listed in files' reports, by code",
            m.problems.clone(),
        );
        r.register_with_unit(
            "processing",
            "From a file's receipt to its final state, waiting included",
            Unit::Seconds,
            m.processing_seconds.clone(),
        );
        r.register(
            "audit_events",
            "Audit rows written, by action (login, login_refused, address_banned, upload, ...)",
            m.audit_events.clone(),
        );
        r.register(
            "sftp_sessions",
            "SFTP sessions open on the embedded server",
            m.sftp_sessions.clone(),
        );
        r.register(
            "spool_full",
            "1 while the spool has less free space than min_free_space: new files wait",
            m.spool_full.clone(),
        );
        r.register(
            "polls",
            "Polls of remote servers, by source and outcome",
            m.polls.clone(),
        );
        r.register(
            "deliveries",
            "Pushes of exports, forwarded files and receipts, by outcome",
            m.deliveries.clone(),
        );
        r.register(
            "delivery_retries",
            "Delivery attempts that failed and were tried again after a wait",
            m.delivery_retries.clone(),
        );
        r.register(
            "schedule_runs",
            "Scheduled exports run, by schedule and outcome",
            m.schedule_runs.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Every configured source and feed shows from the start, at zero,
    /// rather than only once something happens to it.
    pub fn expect<'a>(
        &self,
        sources: impl IntoIterator<Item = &'a str>,
        feeds: impl IntoIterator<Item = &'a str>,
    ) {
        for source in sources {
            let label = SourceLabel {
                source: source.to_string(),
            };
            self.files_received.get_or_create(&label).inc_by(0);
            self.bytes_received.get_or_create(&label).inc_by(0);
        }
        for feed in feeds {
            for state in ["loaded", "quarantined", "duplicate"] {
                let labels = ProcessedLabels {
                    feed: feed.to_string(),
                    state: state.to_string(),
                };
                self.files_processed.get_or_create(&labels).inc_by(0);
            }
            let label = FeedLabel {
                feed: feed.to_string(),
            };
            self.rows.get_or_create(&label).inc_by(0);
            self.records.get_or_create(&label).inc_by(0);
        }
    }

    pub fn received(&self, source: &str, bytes: u64, took: Duration) {
        let label = SourceLabel {
            source: source.to_string(),
        };
        self.files_received.get_or_create(&label).inc();
        self.bytes_received.get_or_create(&label).inc_by(bytes);
        self.landing_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    pub fn delivery(&self, kind: &str, destination: &str, delivered: bool) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                kind: kind.to_string(),
                destination: destination.to_string(),
                outcome: if delivered { "delivered" } else { "failed" }.to_string(),
            })
            .inc();
    }

    pub fn poll(&self, source: &str, ok: bool) {
        self.polls
            .get_or_create(&PollLabels {
                source: source.to_string(),
                outcome: if ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
    }

    pub fn schedule_run(&self, schedule: &str, outcome: &str) {
        self.schedule_runs
            .get_or_create(&RunLabels {
                schedule: schedule.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_is_openmetrics_text_with_counts_by_label_and_an_end() {
        let metrics = Metrics::new();
        metrics.received("drop", 100, Duration::from_millis(40));
        metrics.received("drop", 50, Duration::from_millis(40));
        metrics.delivery("export", "controller-sftp", false);
        let text = metrics.encode();
        for line in [
            "# TYPE dropgate_files_received counter",
            "dropgate_files_received_total{source=\"drop\"} 2",
            "# UNIT dropgate_received_bytes bytes",
            "dropgate_received_bytes_total{source=\"drop\"} 150",
            "# TYPE dropgate_landing_seconds histogram",
            "dropgate_landing_seconds_count{source=\"drop\"} 2",
            "dropgate_landing_seconds_bucket{le=\"0.03\",source=\"drop\"} 0",
            "dropgate_landing_seconds_bucket{le=\"0.09\",source=\"drop\"} 2",
            "dropgate_deliveries_total{kind=\"export\",destination=\"controller-sftp\",outcome=\"failed\"} 1",
            "dropgate_sftp_sessions 0",
            "dropgate_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
