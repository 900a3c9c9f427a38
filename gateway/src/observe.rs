//! Logging, and the one place where each request is accounted for.
//!
//! Every response body the gateway sends is wrapped in a [`Recorded`] body that carries the
//! request's [`RequestRecord`]. When the body has been sent, or is dropped because the client
//! went away, the record is finished exactly once: the access line is written and every
//! [`RequestObserver`] is called. Metrics belong there, as an observer: the record has the
//! listener, status, decision, upstream error kind, durations and bytes.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::uri::{Authority, PathAndQuery};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};
use crate::proxy::ErrorKind;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain HTTP (redirects, ACME challenges).
    Http,
    /// HTTPS (the proxied site).
    Https,
}

impl Listener {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
        }
    }
}

/// The host a request named, as it came (for the access line).
#[derive(Debug, Clone, Default)]
pub enum HostField {
    /// No host at all.
    #[default]
    None,
    /// From the `Host` header.
    Header(HeaderValue),
    /// From the request target or HTTP/2 `:authority`.
    Authority(Authority),
}

impl HostField {
    /// The host as text ("-" when absent or not UTF-8).
    pub fn as_str(&self) -> &str {
        match self {
            HostField::None => "-",
            HostField::Header(v) => v.to_str().unwrap_or("-"),
            HostField::Authority(a) => a.as_str(),
        }
    }
}

/// Everything known about one request by the time its response is sent.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The listener.
    pub listener: Listener,
    /// The client the decision was made on (canonical form).
    pub client: IpAddr,
    /// The TCP peer (canonical form); differs from `client` behind a trusted proxy.
    pub peer: IpAddr,
    /// Request method.
    pub method: Method,
    /// Request host.
    pub host: HostField,
    /// Path and query as received.
    pub path: Option<PathAndQuery>,
    /// HTTP version of the client's request.
    pub version: Version,
    /// `TLSv1.3`, `TLSv1.2`, or None on the HTTP listener.
    pub tls_version: Option<&'static str>,
    /// `allow`, `deny`, `not-allowed`, `challenge`, or `-` before a decision was made.
    pub decision: &'static str,
    /// Response status.
    pub status: StatusCode,
    /// Set when the upstream exchange failed.
    pub error: Option<ErrorKind>,
    /// The request id sent upstream.
    pub request_id: Option<HeaderValue>,
    /// When the request head was received.
    pub started: Instant,
    /// Time from `started` to the upstream's response head, when proxied.
    pub upstream: Option<Duration>,
    /// Response body bytes sent.
    pub bytes: u64,
    /// True when the body did not complete (client gone, or the upstream body failed).
    pub incomplete: bool,
}

/// Called once for every finished request, after the access line is written.
///
/// Implementations run on the request path: they must not block or take contended locks
/// (atomic counters and lock-free histograms are fine).
pub trait RequestObserver: Send + Sync + 'static {
    /// `record` is complete; `total` is the time from request head to last body byte.
    fn on_request(&self, record: &RequestRecord, total: Duration);

    /// A client connection was accepted on `listener`; [`Self::on_connection_closed`]
    /// follows exactly once when it ends, however it ends.
    fn on_connection_opened(&self, _listener: Listener) {}

    /// A connection reported by [`Self::on_connection_opened`] has ended.
    fn on_connection_closed(&self, _listener: Listener) {}

    /// A TLS handshake failed or timed out (one cut short by shutdown is not counted).
    fn on_tls_handshake_failed(&self) {}
}

/// An observer that does nothing (the default).
#[derive(Debug, Default)]
pub struct NoObserver;

impl RequestObserver for NoObserver {
    fn on_request(&self, _: &RequestRecord, _: Duration) {}
}

/// Where finished records go: the access log and the observer.
#[derive(Clone)]
pub struct Accounting {
    /// Whether the access line is written (`log.access`).
    pub access_log: bool,
    /// Metrics and the like.
    pub observer: Arc<dyn RequestObserver>,
}

impl Accounting {
    /// Writes the access line and calls the observer: the one accounting point per request.
    pub fn finish(&self, record: &RequestRecord) {
        let total = record.started.elapsed();
        if self.access_log {
            let path = record.path.as_ref().map_or("-", PathAndQuery::as_str);
            tracing::info!(
                target: "edge_gateway::access",
                listener = record.listener.as_str(),
                client.addr = %record.client,
                peer.addr = %record.peer,
                http.method = record.method.as_str(),
                http.host = record.host.as_str(),
                http.path = path,
                http.version = version_str(record.version),
                http.status = record.status.as_u16(),
                bytes = record.bytes,
                duration_ms = millis(total),
                upstream_ms = record.upstream.map(millis),
                tls.version = record.tls_version,
                decision = record.decision,
                error.kind = record.error.map(ErrorKind::as_str),
                request_id = record.request_id.as_ref().and_then(|v| v.to_str().ok()),
                incomplete = record.incomplete,
                "Request"
            );
        }
        self.observer.on_request(record, total);
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// A response body: the upstream's, streamed, or a short one made here.
#[derive(Debug)]
pub enum GatewayBody {
    /// Streamed from the upstream.
    Upstream(Incoming),
    /// Made by the gateway (redirects, errors); taken on the first poll.
    Local(Option<Bytes>),
}

impl GatewayBody {
    /// A local body.
    pub fn local(bytes: impl Into<Bytes>) -> GatewayBody {
        let b = bytes.into();
        GatewayBody::Local(if b.is_empty() { None } else { Some(b) })
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            GatewayBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            GatewayBody::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Upstream(b) => b.is_end_stream(),
            GatewayBody::Local(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Upstream(b) => b.size_hint(),
            GatewayBody::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A response body that finishes its request's record when it ends or is dropped.
pub struct Recorded {
    inner: GatewayBody,
    record: Option<RequestRecord>,
    accounting: Accounting,
}

impl Recorded {
    /// Wraps `inner`; `record` is finished through `accounting`.
    pub fn new(inner: GatewayBody, record: RequestRecord, accounting: Accounting) -> Recorded {
        Recorded {
            inner,
            record: Some(record),
            accounting,
        }
    }

    fn finish(&mut self, incomplete: bool) {
        if let Some(mut record) = self.record.take() {
            record.incomplete = incomplete;
            self.accounting.finish(&record);
        }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let incomplete = !self.inner.is_end_stream();
        self.finish(incomplete);
    }
}

impl Body for Recorded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_mut()) {
                    record.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::debug!(%error, "Upstream response body failed");
                this.finish(true);
            }
            Poll::Ready(None) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Installs the global `tracing` subscriber: `RUST_LOG` if set, else `log.level`; JSON or
/// human-readable lines on standard error.
pub fn init_logging(
    settings: &LogSettings,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => v,
        _ => settings.level.clone(),
    };
    let filter = EnvFilter::builder().parse(quiet_rustls(&directives))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    }
}

/// rustls warns, once per handshake, about clients that put an IP address in SNI (wrk and
/// other tools do); that is the client's fault and no operator's concern, so rustls is held
/// to errors unless the filter names it.
fn quiet_rustls(directives: &str) -> String {
    if directives.contains("rustls") {
        directives.to_owned()
    } else if directives.trim().is_empty() {
        "rustls=error".to_owned()
    } else {
        format!("{directives},rustls=error")
    }
}
