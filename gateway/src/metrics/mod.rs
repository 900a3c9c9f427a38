//! Prometheus metrics: the families dashboards and alerts are written against.
//!
//! One [`Metrics`] per process, with its own [`Registry`] (not the crate's
//! global one, so tests can run several gateways in one process). Every family
//! is registered at construction and every known label value is created at
//! zero, so that `rate()` and the alert rules in `config/alerts.yml` work before
//! the first event. Labels take only values from closed sets (listener, status
//! class, error kind, deny reason, result) or from the configuration
//! (certificate names); never client addresses, paths or hosts.
//!
//! The request path touches only pre-resolved children: an array index and an
//! atomic add, no label lookup and no lock.

mod server;
#[cfg(test)]
mod tests;

pub use server::serve;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;

use crate::access::Decision;
use crate::observe::{Listener, RequestObserver, RequestRecord};
use crate::proxy::ErrorKind;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Index into the per-listener arrays.
fn slot(listener: Listener) -> usize {
    match listener {
        Listener::Http => 0,
        Listener::Https => 1,
    }
}

const LISTENERS: [Listener; 2] = [Listener::Http, Listener::Https];

/// The upstream failures counted in `edge_gateway_upstream_errors_total`, by the `kind` the
/// access log names. A request body that was too large or broke off is the client's fault,
/// not the upstream's, and is not among them.
pub const UPSTREAM_KINDS: [ErrorKind; 7] = [
    ErrorKind::ConnectRefused,
    ErrorKind::ConnectTimeout,
    ErrorKind::Unreachable,
    ErrorKind::Connect,
    ErrorKind::Timeout,
    ErrorKind::Closed,
    ErrorKind::Protocol,
];

/// The refusals counted in `edge_gateway_denied_requests_total`, by the `reason` the access
/// log names: in a deny range (deny wins over allow), or in no allow range.
pub const DENY_REASONS: [Decision; 2] = [Decision::Denied, Decision::NotAllowed];

/// How a reload or a renewal ended, as the `result` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (a reload) or issued (a renewal).
    Success,
    /// Refused or failed; what was in force stays.
    Failure,
}

impl Outcome {
    const ALL: [Outcome; 2] = [Outcome::Success, Outcome::Failure];

    /// The `result` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// Status classes `1xx` to `5xx`, the `class` label of the request counter.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request duration buckets, in seconds: from a cached redirect (sub-ms) to a
/// request that ran into the whole-request timeout (30 s by default).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// All of the gateway's metric families, registered in one registry.
///
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    /// Indexed `[listener][status class]`.
    requests: [[IntCounter; 5]; 2],
    durations: [Histogram; 2],
    upstream_errors: [IntCounter; UPSTREAM_KINDS.len()],
    denied: [IntCounter; 2],
    tls_handshake_failures: IntCounter,
    open_connections: [IntGauge; 2],
    reloads: [IntCounter; 2],
    last_reload_success: Gauge,
    last_reload_successful: IntGauge,
    certificate_expiry: GaugeVec,
    acme_renewals: [IntCounter; 2],
}

/// Registers a family; a failure here (as in defining one, see [`family`]) is a programming
/// error (a duplicate name or a bad label), so it panics with the family's name.
fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    let name = c
        .desc()
        .first()
        .map(|d| d.fq_name.clone())
        .unwrap_or_default();
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("registering metric family {name}: {e}"));
    c
}

/// Defines the family `name` with `make` (given its name and help) and registers it.
fn family<C: Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    help: &str,
    make: impl FnOnce(Opts) -> prometheus::Result<C>,
) -> C {
    let family = make(Opts::new(name, help))
        .unwrap_or_else(|e| panic!("defining metric family {name}: {e}"));
    register(registry, family)
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    family(registry, name, help, |opts| {
        IntCounterVec::new(opts, labels)
    })
}

impl Metrics {
    /// Creates every family with its known label values at zero.
    ///
    /// `version` is the `version` label of `edge_gateway_build_info`.
    pub fn new(version: &str) -> Metrics {
        let registry = Registry::new();

        let requests_vec = counter_vec(
            &registry,
            "edge_gateway_requests_total",
            "Requests answered, by listener and status class.",
            &["listener", "class"],
        );
        let requests = LISTENERS.map(|l| {
            STATUS_CLASSES.map(|class| requests_vec.with_label_values(&[l.as_str(), class]))
        });

        let durations_vec = family(
            &registry,
            "edge_gateway_request_duration_seconds",
            "Time from the request head to the end of the response head, by listener.",
            |opts| {
                let opts = HistogramOpts::from(opts).buckets(DURATION_BUCKETS.to_vec());
                HistogramVec::new(opts, &["listener"])
            },
        );
        let durations = LISTENERS.map(|l| durations_vec.with_label_values(&[l.as_str()]));

        let upstream_vec = counter_vec(
            &registry,
            "edge_gateway_upstream_errors_total",
            "Requests that failed at the upstream, by kind of failure.",
            &["kind"],
        );
        let upstream_errors = UPSTREAM_KINDS.map(|k| upstream_vec.with_label_values(&[k.as_str()]));

        let denied_vec = counter_vec(
            &registry,
            "edge_gateway_denied_requests_total",
            "Requests refused by the CIDR filter with a 403, by reason.",
            &["reason"],
        );
        let denied = DENY_REASONS.map(|r| denied_vec.with_label_values(&[r.as_str()]));

        let tls_handshake_failures = family(
            &registry,
            "edge_gateway_tls_handshake_failures_total",
            "TLS handshakes that failed (protocol version, no certificate for the name, client \
             gave up).",
            IntCounter::with_opts,
        );

        let open_vec = family(
            &registry,
            "edge_gateway_open_connections",
            "Client connections open now, by listener.",
            |opts| IntGaugeVec::new(opts, &["listener"]),
        );
        let open_connections = LISTENERS.map(|l| open_vec.with_label_values(&[l.as_str()]));

        let reloads_vec = counter_vec(
            &registry,
            "edge_gateway_config_reloads_total",
            "Configuration reloads (SIGHUP or file change), by result.",
            &["result"],
        );
        let reloads = Outcome::ALL.map(|o| reloads_vec.with_label_values(&[o.as_str()]));

        let last_reload_success = family(
            &registry,
            "edge_gateway_config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded (start or last successful reload).",
            Gauge::with_opts,
        );
        let last_reload_successful = family(
            &registry,
            "edge_gateway_config_last_reload_successful",
            "1 if the last reload attempt was applied, 0 if it was refused.",
            IntGauge::with_opts,
        );
        last_reload_successful.set(1);

        let certificate_expiry = family(
            &registry,
            "edge_gateway_certificate_expiry_timestamp_seconds",
            "When the certificate served for a name expires (notAfter).",
            |opts| GaugeVec::new(opts, &["name"]),
        );

        let acme_vec = counter_vec(
            &registry,
            "edge_gateway_acme_renewals_total",
            "ACME orders for a new certificate, by result.",
            &["result"],
        );
        let acme_renewals = Outcome::ALL.map(|o| acme_vec.with_label_values(&[o.as_str()]));

        let build_info = family(
            &registry,
            "edge_gateway_build_info",
            "Always 1; the version as a label.",
            |opts| IntGaugeVec::new(opts, &["version"]),
        );
        build_info.with_label_values(&[version]).set(1);

        Metrics {
            registry,
            requests,
            durations,
            upstream_errors,
            denied,
            tls_handshake_failures,
            open_connections,
            reloads,
            last_reload_success,
            last_reload_successful,
            certificate_expiry,
            acme_renewals,
        }
    }

    /// Counts one answered request and observes its duration (request head in to the last
    /// body byte out).
    ///
    /// A status outside 100..=599 (hyper allows up to 999) is counted as `5xx`:
    /// the class set stays closed, and such a status from the upstream is a
    /// fault worth seeing among the errors.
    pub fn request(&self, listener: Listener, status: u16, elapsed: Duration) {
        let class = match status / 100 {
            1 => 0,
            2 => 1,
            3 => 2,
            4 => 3,
            _ => 4,
        };
        self.requests[slot(listener)][class].inc();
        self.durations[slot(listener)].observe(elapsed.as_secs_f64());
    }

    /// Counts a failed exchange with the upstream; client faults (a body too large or cut
    /// off) are not counted.
    pub fn upstream_error(&self, kind: ErrorKind) {
        if let Some(i) = UPSTREAM_KINDS.iter().position(|k| *k == kind) {
            self.upstream_errors[i].inc();
        }
    }

    /// Counts a request refused by the CIDR filter; `Allowed` counts nothing.
    pub fn denied(&self, decision: Decision) {
        if let Some(i) = DENY_REASONS.iter().position(|d| *d == decision) {
            self.denied[i].inc();
        }
    }

    /// Counts a failed TLS handshake.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// Counts a client connection as open.
    pub fn connection_opened(&self, listener: Listener) {
        self.open_connections[slot(listener)].inc();
    }

    /// Counts a client connection as closed again.
    pub fn connection_closed(&self, listener: Listener) {
        self.open_connections[slot(listener)].dec();
    }

    /// Records a reload attempt. A success also moves the "config in force
    /// since" timestamp.
    pub fn reload(&self, outcome: Outcome) {
        self.reloads[outcome as usize].inc();
        match outcome {
            Outcome::Success => {
                self.last_reload_successful.set(1);
                self.config_loaded_now();
            }
            Outcome::Failure => self.last_reload_successful.set(0),
        }
    }

    /// Marks the configuration in force as loaded now (called once at start,
    /// and by [`Metrics::reload`] on success).
    pub fn config_loaded_now(&self) {
        self.last_reload_success
            .set(unix_seconds(SystemTime::now()));
    }

    /// Sets the expiry of the certificate served for `name`.
    pub fn certificate_expiry(&self, name: &str, not_after: SystemTime) {
        self.certificate_expiry
            .with_label_values(&[name])
            .set(unix_seconds(not_after));
    }

    /// Drops the expiry series of names no longer configured, so that an alert
    /// does not fire for a certificate nobody serves any more.
    pub fn retain_certificates<'a>(&self, names: impl IntoIterator<Item = &'a str> + Clone) {
        for family in self.certificate_expiry.collect() {
            for metric in family.get_metric() {
                let Some(label) = metric.get_label().iter().find(|l| l.name() == "name") else {
                    continue;
                };
                let current = label.value();
                if !names.clone().into_iter().any(|n| n == current) {
                    // The series was just read, so removing it cannot miss.
                    let _ = self.certificate_expiry.remove_label_values(&[current]);
                }
            }
        }
    }

    /// Counts an ACME order for a new certificate.
    pub fn acme_renewal(&self, outcome: Outcome) {
        self.acme_renewals[outcome as usize].inc();
    }

    /// The registry, for a caller that wants to add its own families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every family in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("the text encoder writes into a Vec");
        String::from_utf8(buf).expect("the text encoder writes UTF-8")
    }
}

/// The request path's side: each finished request, connection and failed handshake.
impl RequestObserver for Metrics {
    fn on_request(&self, record: &RequestRecord, total: Duration) {
        self.request(record.listener, record.status.as_u16(), total);
        if let Some(kind) = record.error {
            self.upstream_error(kind);
        }
        // The record carries the decision as the access log's word.
        if let Some(d) = DENY_REASONS.iter().find(|d| d.as_str() == record.decision) {
            self.denied(*d);
        }
    }

    fn on_connection_opened(&self, listener: Listener) {
        self.connection_opened(listener);
    }

    fn on_connection_closed(&self, listener: Listener) {
        self.connection_closed(listener);
    }

    fn on_tls_handshake_failed(&self) {
        self.tls_handshake_failed();
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    // A time before 1970 is no real certificate date; 0 makes it "expired".
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
