//! Forwarding a request to the upstream and its response back.
//!
//! One pooled hyper client per upstream keeps HTTP/1.1 keep-alive connections open. Bodies
//! stream both ways; the request body is only counted, against `limits.max_body_bytes`.
//! Hop-by-hop headers are removed in both directions; `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-Id` are set. An `Upgrade` request
//! (WebSocket) is passed on, and when the upstream answers 101 the two connections are joined
//! byte for byte.
//!
//! Failures are [`ProxyError`]s whose [`ErrorKind`] is found from the error's type (walking
//! `source()`), never from its text.
//!
//! Known shortcomings:
//! - hyper-util's legacy client keeps its pool behind a mutex, taken on every checkout and
//!   return; under many cores that lock is contended (nothing of ours is locked).
//! - Each request crosses from the client connection's task to the pooled upstream
//!   connection's task and back, where nginx stays in one event loop; on the benchmark this
//!   costs throughput on keep-alive HTTPS (see `gateway/benches/compare.sh`).
//! - Upgraded tunnels (WebSocket) run in their own tasks, outside the graceful drain: at
//!   shutdown they are cut when the grace period ends or the process exits.
//! - WebSocket over HTTP/2 (extended CONNECT, RFC 8441) is not passed on; clients fall back
//!   to HTTP/1.1 upgrades, which are.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::Settings;

/// Any error, boxed.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body sent upstream: the client's, counted.
pub type UpstreamBody = Limited<Incoming>;

/// What went wrong talking to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Nothing listens at the upstream's address.
    ConnectRefused,
    /// The TCP connection was not made within `timeouts.connect`.
    ConnectTimeout,
    /// No route to the upstream's host or network.
    Unreachable,
    /// Another failure to connect.
    Connect,
    /// No response headers within `timeouts.request`.
    Timeout,
    /// The client sent more than `limits.max_body_bytes`.
    BodyTooLarge,
    /// The client's request body failed (it went away or broke framing).
    ClientBody,
    /// The upstream closed the connection before a complete response.
    Closed,
    /// The upstream's response was not valid HTTP, or another protocol error.
    Protocol,
}

impl ErrorKind {
    /// The word used in logs (and later metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect-refused",
            ErrorKind::ConnectTimeout => "connect-timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BodyTooLarge => "body-too-large",
            ErrorKind::ClientBody => "client-body",
            ErrorKind::Closed => "closed",
            ErrorKind::Protocol => "protocol",
        }
    }

    /// The status the client is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::ConnectTimeout | ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::ClientBody => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The short body the client is answered with.
    pub fn body(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "502 Bad Gateway: the upstream refused the connection\n",
            ErrorKind::Unreachable => "502 Bad Gateway: the upstream is unreachable\n",
            ErrorKind::Connect => "502 Bad Gateway: cannot connect to the upstream\n",
            ErrorKind::ConnectTimeout => {
                "504 Gateway Timeout: connecting to the upstream timed out\n"
            }
            ErrorKind::Timeout => "504 Gateway Timeout: the upstream did not answer in time\n",
            ErrorKind::BodyTooLarge => "413 Content Too Large: the request body is too large\n",
            ErrorKind::ClientBody => "400 Bad Request: the request body could not be read\n",
            ErrorKind::Closed => "502 Bad Gateway: the upstream closed the connection\n",
            ErrorKind::Protocol => "502 Bad Gateway: the upstream sent an invalid response\n",
        }
    }

    /// Whether the fault lies with the client rather than the upstream (logged at debug).
    pub fn is_client_fault(self) -> bool {
        matches!(self, ErrorKind::BodyTooLarge | ErrorKind::ClientBody)
    }
}

/// A failed exchange with the upstream.
#[derive(Debug, thiserror::Error)]
#[error("{}", kind.as_str())]
pub struct ProxyError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The underlying error, when there is one.
    #[source]
    pub source: Option<BoxError>,
}

impl ProxyError {
    fn new(kind: ErrorKind) -> ProxyError {
        ProxyError { kind, source: None }
    }

    /// Classifies a client error by the types in its `source()` chain.
    pub fn classify(err: hyper_util::client::legacy::Error) -> ProxyError {
        let kind = classify(&err);
        ProxyError {
            kind,
            source: Some(Box::new(err)),
        }
    }
}

fn classify(err: &hyper_util::client::legacy::Error) -> ErrorKind {
    if find::<LengthLimitError>(err).is_some() {
        return ErrorKind::BodyTooLarge;
    }
    if err.is_connect() {
        return match find::<io::Error>(err).map(io::Error::kind) {
            Some(io::ErrorKind::ConnectionRefused) => ErrorKind::ConnectRefused,
            Some(io::ErrorKind::TimedOut) => ErrorKind::ConnectTimeout,
            Some(io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable) => {
                ErrorKind::Unreachable
            }
            _ => ErrorKind::Connect,
        };
    }
    match find::<hyper::Error>(err) {
        Some(h) if h.is_user() => ErrorKind::ClientBody,
        Some(h) if h.is_incomplete_message() || h.is_closed() || h.is_canceled() => {
            ErrorKind::Closed
        }
        _ if find::<io::Error>(err).is_some() => ErrorKind::Closed,
        _ => ErrorKind::Protocol,
    }
}

/// The first error of type `T` in the chain starting at `err`.
pub fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// The upstream: where to connect and the pool of connections to it.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpConnector, UpstreamBody>,
    scheme: Scheme,
    authority: Authority,
    /// The settings the client was built from, to tell whether a reload may keep the pool.
    key: (Authority, Duration, Duration, usize),
}

/// What the forwarding step needs to know about the request beyond the request itself.
pub struct Forward<'a> {
    /// The value to send as `X-Forwarded-For`, already composed.
    pub forwarded_for: HeaderValue,
    /// The request id to send.
    pub request_id: &'a HeaderValue,
    /// Whether the peer is a trusted proxy (then its `X-Forwarded-Host` is kept if present).
    pub peer_trusted: bool,
    /// `limits.max_body_bytes`.
    pub max_body_bytes: u64,
    /// `timeouts.request`.
    pub timeout: Duration,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static HTTPS: HeaderValue = HeaderValue::from_static("https");
static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

impl Upstream {
    /// Builds the client for `[upstream]`, with `timeouts.connect`, `timeouts.upstream_idle`
    /// and `limits.upstream_max_idle`.
    pub fn new(settings: &Settings) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.timeouts.connect));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.timeouts.upstream_idle)
            .pool_max_idle_per_host(settings.limits.upstream_max_idle)
            .build(connector);
        let authority = settings.upstream.authority.clone();
        Upstream {
            client,
            scheme: settings.upstream.scheme.clone(),
            key: (
                authority.clone(),
                settings.timeouts.connect,
                settings.timeouts.upstream_idle,
                settings.limits.upstream_max_idle,
            ),
            authority,
        }
    }

    /// Whether `settings` would build the same client (so a reload can keep this pool).
    pub fn same_as(&self, settings: &Settings) -> bool {
        self.key
            == (
                settings.upstream.authority.clone(),
                settings.timeouts.connect,
                settings.timeouts.upstream_idle,
                settings.limits.upstream_max_idle,
            )
    }

    /// `host:port` of the upstream, for logs.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Sends `req` upstream and returns the response head with its streaming body.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        fwd: Forward<'_>,
    ) -> Result<Response<Incoming>, ProxyError> {
        // Only HTTP/1.1 has Upgrade; HTTP/2's extended CONNECT is not passed on.
        let upgrade = if req.version() == Version::HTTP_11 && wants_upgrade(req.headers()) {
            let protocol = req.headers().get(header::UPGRADE).cloned();
            protocol.map(|p| (p, hyper::upgrade::on(&mut req)))
        } else {
            None
        };

        let (mut parts, body) = req.into_parts();
        let headers = &mut parts.headers;
        // HTTP/2 carries the host in :authority; HTTP/1.1 upstreams need it as Host.
        if !headers.contains_key(header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    headers.insert(header::HOST, v);
                }
            }
        }
        remove_hop_by_hop(headers);
        if let Some((protocol, _)) = &upgrade {
            headers.insert(header::CONNECTION, UPGRADE_TOKEN.clone());
            headers.insert(header::UPGRADE, protocol.clone());
        }
        headers.insert(X_FORWARDED_FOR.clone(), fwd.forwarded_for);
        headers.insert(X_FORWARDED_PROTO.clone(), HTTPS.clone());
        if !(fwd.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
            match headers.get(header::HOST).cloned() {
                Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
                None => headers.remove(&X_FORWARDED_HOST),
            };
        }
        headers.insert(X_REQUEST_ID.clone(), fwd.request_id.clone());

        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri = Uri::from_parts(uri).map_err(|e| ProxyError {
            kind: ErrorKind::Protocol,
            source: Some(Box::new(e)),
        })?;
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();

        let limit = usize::try_from(fwd.max_body_bytes).unwrap_or(usize::MAX);
        let out = Request::from_parts(parts, Limited::new(body, limit));
        let mut resp = match tokio::time::timeout(fwd.timeout, self.client.request(out)).await {
            Err(_elapsed) => return Err(ProxyError::new(ErrorKind::Timeout)),
            Ok(Err(e)) => return Err(ProxyError::classify(e)),
            Ok(Ok(resp)) => resp,
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some((_, client_side)) = upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client_side, upstream_side));
                return Ok(resp);
            }
        }
        remove_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }
}

/// Copies bytes both ways between an upgraded client and upstream until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "Upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(bytes.up = up, bytes.down = down, "Tunnel closed"),
        Err(error) => tracing::debug!(%error, "Tunnel ended with an error"),
    }
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the hop-by-hop headers of RFC 9110 section 7.6.1: those named by `Connection`, and
/// `Connection`, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
/// `Host` is never removed, even when `Connection` names it: without it the upstream would
/// see the pool's `127.0.0.1:8000` as the request's host.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|name| name != header::HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
}
