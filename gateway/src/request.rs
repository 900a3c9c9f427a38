//! The life of a connection and of each request on it, top to bottom.
//!
//! 1. A connection is accepted by [`crate::server`] and handed to [`connection`].
//! 2. On the HTTPS listener, the TLS handshake (bounded by `timeouts.header_read`).
//! 3. hyper reads each request (HTTP/1.1 or HTTP/2, chosen by ALPN) and calls
//!    [`https_request`] or [`http_request`], which load the live [`Snapshot`] once.
//! 4. The decision: header size, the ACME challenge path (HTTP only, before the filter), the
//!    client address and the access rules, the body size announced.
//! 5. The action: proxy upstream (HTTPS), or redirect (HTTP).
//! 6. The log: the response body is wrapped in [`Recorded`], which writes the access line and
//!    calls the metrics observer when the body is done.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::access::{canonical, Client};
use crate::observe::{Accounting, GatewayBody, HostField, Listener, Recorded, RequestRecord};
use crate::proxy::{Forward, X_REQUEST_ID};
use crate::state::{Live, Snapshot};
use crate::ChallengeResponder;

/// The path prefix answered by the [`ChallengeResponder`] on the HTTP listener.
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What every connection shares.
pub(crate) struct Shared {
    pub live: Live,
    pub acceptor: TlsAcceptor,
    pub challenges: Arc<dyn ChallengeResponder>,
    pub accounting: Accounting,
    pub ids: RequestIds,
}

/// What is fixed for the life of one connection.
struct Conn {
    listener: Listener,
    /// Canonical peer address.
    peer: IpAddr,
    /// The peer's address as a header value, made once per connection.
    peer_value: HeaderValue,
    tls_version: Option<&'static str>,
}

/// Serves one accepted connection until it closes or the server drains.
pub(crate) async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    watcher: Watcher,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _open = OpenConnection::new(&shared, listener);
    // The snapshot current at accept time decides this connection's protocol settings.
    let snapshot = shared.live.load_full();
    let peer = canonical(peer.ip());
    let peer_value = HeaderValue::from_str(&peer.to_string()).expect("an address is ASCII");
    let conn_over = |tls_version| Conn {
        listener,
        peer,
        peer_value,
        tls_version,
    };
    match listener {
        Listener::Http => {
            let conn = conn_over(None);
            serve(shared, conn, stream, &snapshot, watcher, http_request).await;
        }
        Listener::Https => {
            let handshake = tokio::time::timeout(
                snapshot.timeouts.header_read,
                shared.acceptor.accept(stream),
            );
            let tls = tokio::select! {
                r = handshake => r,
                _ = shutdown.cancelled() => return,
            };
            let tls = match tls {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    shared.accounting.observer.on_tls_handshake_failed();
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    shared.accounting.observer.on_tls_handshake_failed();
                    return;
                }
            };
            let tls_version = match tls.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
                Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
                _ => Some("-"),
            };
            let conn = conn_over(tls_version);
            serve(shared, conn, tls, &snapshot, watcher, https_request).await;
        }
    }
}

/// Serves HTTP on `io` (the TCP stream, or the TLS stream after the handshake) until the
/// connection closes or the server drains, each request handled by `handle`.
async fn serve<I, H, F>(
    shared: Arc<Shared>,
    conn: Conn,
    io: I,
    snapshot: &Snapshot,
    watcher: Watcher,
    handle: H,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Arc<Shared>, Arc<Conn>, Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Result<Response<Recorded>, Infallible>> + Send + 'static,
{
    let conn = Arc::new(conn);
    let service = service_fn(move |req| handle(shared.clone(), conn.clone(), req));
    let io = FirstByteDeadline::new(io, snapshot.timeouts.header_read);
    let serving = snapshot
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(serving).await {
        tracing::debug!(%error, "Connection ended with an error");
    }
}

/// A connection's I/O whose first bytes must arrive within `timeouts.header_read`.
///
/// hyper-util's auto builder reads the first bytes itself, to tell HTTP/1.1 from HTTP/2,
/// before hyper's header timeout starts: without this, a client that connects (or finishes
/// its handshake) and sends nothing holds a slot of `limits.max_connections` for ever, and a
/// few such clients, denied or not, lock everyone out. Once a byte has come, hyper's HTTP/1.1
/// header timeout bounds every request head, keep-alive waits included.
///
/// Known shortcoming: HTTP/2 has no such bound after its preface; an HTTP/2 connection that
/// sends no request stays open, holding its slot, until the client closes it.
struct FirstByteDeadline<T> {
    io: T,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> FirstByteDeadline<T> {
    fn new(io: T, within: Duration) -> FirstByteDeadline<T> {
        FirstByteDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = match &mut this.deadline {
                    Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    tracing::debug!("No request within the header timeout");
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Reports a connection to the observer as open for as long as it lives: every way out of
/// [`connection`] (an error, the drain, a panic unwinding) reports it closed.
struct OpenConnection {
    shared: Arc<Shared>,
    listener: Listener,
}

impl OpenConnection {
    fn new(shared: &Arc<Shared>, listener: Listener) -> OpenConnection {
        shared.accounting.observer.on_connection_opened(listener);
        OpenConnection {
            shared: Arc::clone(shared),
            listener,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared
            .accounting
            .observer
            .on_connection_closed(self.listener);
    }
}

/// A request on the HTTPS listener: check, then proxy.
async fn https_request(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<Recorded>, Infallible> {
    let snapshot = shared.live.load_full();
    let mut record = start_record(&conn, &req);
    let mut response = proxy_checked(&shared, &snapshot, &conn, req, &mut record).await;
    if let Some(hsts) = &snapshot.hsts {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    Ok(finish(&shared, &snapshot, record, response))
}

async fn proxy_checked(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: &Conn,
    req: Request<Incoming>,
    record: &mut RequestRecord,
) -> Response<GatewayBody> {
    if head_size(&req) > snapshot.limits.max_header_bytes {
        return local(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, TOO_LARGE_HEAD);
    }
    let client = snapshot
        .access
        .client(conn.peer, req.headers().get_all(&XFF));
    if let Some(denied) = decide(snapshot, &client, record) {
        return denied;
    }
    if content_length(&req).is_some_and(|n| n > snapshot.limits.max_body_bytes) {
        record.error = Some(crate::proxy::ErrorKind::BodyTooLarge);
        return local(
            StatusCode::PAYLOAD_TOO_LARGE,
            crate::proxy::ErrorKind::BodyTooLarge.body(),
        );
    }

    let request_id = request_id(shared, &client, &req);
    record.request_id = Some(request_id.clone());
    let forwarded_for = forwarded_for(conn, &client, &req);
    let fwd = Forward {
        forwarded_for,
        request_id: &request_id,
        peer_trusted: client.peer_trusted,
        max_body_bytes: snapshot.limits.max_body_bytes,
        timeout: snapshot.timeouts.request,
    };
    let result = snapshot.upstream.forward(req, fwd).await;
    record.upstream = Some(record.started.elapsed());
    match result {
        Ok(resp) => {
            let mut resp = resp.map(GatewayBody::Upstream);
            resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
            resp
        }
        Err(error) => {
            let kind = error.kind;
            record.error = Some(kind);
            let upstream = snapshot.upstream.authority().as_str();
            let cause = error.source.as_deref().map(tracing::field::display);
            if kind.is_client_fault() {
                tracing::debug!(
                    upstream,
                    error.kind = kind.as_str(),
                    error.cause = cause,
                    "Request body refused"
                );
            } else {
                tracing::warn!(
                    upstream,
                    error.kind = kind.as_str(),
                    error.cause = cause,
                    "Upstream request failed"
                );
            }
            let mut resp = local(kind.status(), kind.body());
            resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
            resp
        }
    }
}

/// A request on the HTTP listener: ACME challenge, check, then redirect.
async fn http_request(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<Recorded>, Infallible> {
    let snapshot = shared.live.load_full();
    let mut record = start_record(&conn, &req);
    let response = redirect_checked(&shared, &snapshot, &conn, &req, &mut record);
    Ok(finish(&shared, &snapshot, record, response))
}

fn redirect_checked(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: &Conn,
    req: &Request<Incoming>,
    record: &mut RequestRecord,
) -> Response<GatewayBody> {
    if head_size(req) > snapshot.limits.max_header_bytes {
        return local(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, TOO_LARGE_HEAD);
    }
    // Challenges come from the CA's validation servers, whose addresses nobody can list:
    // they pass before the access rules and are never redirected.
    if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX) {
        record.decision = "challenge";
        return match valid_token(token)
            .then(|| shared.challenges.respond(token))
            .flatten()
        {
            Some(answer) => {
                let mut resp = local(StatusCode::OK, answer);
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            None => local(StatusCode::NOT_FOUND, "404 Not Found: no such challenge\n"),
        };
    }
    let client = snapshot
        .access
        .client(conn.peer, req.headers().get_all(&XFF));
    if let Some(denied) = decide(snapshot, &client, record) {
        return denied;
    }
    match snapshot.redirect.location(req) {
        Ok(location) => {
            let mut resp = local(snapshot.redirect.status_for(req.method()), Bytes::new());
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        Err(error) => {
            tracing::debug!(%error, "No redirect for this request");
            local(
                StatusCode::BAD_REQUEST,
                format!("400 Bad Request: {error}\n"),
            )
        }
    }
}

/// Applies the access rules; Some(403 response) when the client may not pass.
fn decide(
    snapshot: &Snapshot,
    client: &Client,
    record: &mut RequestRecord,
) -> Option<Response<GatewayBody>> {
    record.client = client.ip;
    let decision = snapshot.access.decide(client.ip);
    record.decision = decision.as_str();
    match decision {
        crate::access::Decision::Allowed => None,
        crate::access::Decision::Denied => {
            tracing::debug!(client.addr = %client.ip, "Denied by a deny range");
            Some(local(StatusCode::FORBIDDEN, DENIED))
        }
        crate::access::Decision::NotAllowed => {
            tracing::debug!(client.addr = %client.ip, "Not in an allowed range");
            Some(local(StatusCode::FORBIDDEN, NOT_ALLOWED))
        }
    }
}

fn finish(
    shared: &Shared,
    snapshot: &Snapshot,
    mut record: RequestRecord,
    response: Response<GatewayBody>,
) -> Response<Recorded> {
    record.status = response.status();
    let mut accounting = shared.accounting.clone();
    accounting.access_log = snapshot.access_log;
    response.map(|body| Recorded::new(body, record, accounting))
}

fn start_record(conn: &Conn, req: &Request<Incoming>) -> RequestRecord {
    let host = match (req.uri().authority(), req.headers().get(header::HOST)) {
        (Some(a), _) => HostField::Authority(a.clone()),
        (None, Some(h)) => HostField::Header(h.clone()),
        (None, None) => HostField::None,
    };
    RequestRecord {
        listener: conn.listener,
        client: conn.peer,
        peer: conn.peer,
        method: req.method().clone(),
        host,
        path: req.uri().path_and_query().cloned(),
        version: req.version(),
        tls_version: conn.tls_version,
        decision: "-",
        status: StatusCode::OK,
        error: None,
        request_id: None,
        started: Instant::now(),
        upstream: None,
        bytes: 0,
        incomplete: false,
    }
}

static XFF: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");
const DENIED: &str = "403 Forbidden: your address is in a denied range\n";
const NOT_ALLOWED: &str = "403 Forbidden: your address is not in an allowed range\n";
const TOO_LARGE_HEAD: &str = "431 Request Header Fields Too Large\n";

fn local(status: StatusCode, body: impl Into<Bytes>) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::local(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The request head's size as counted against `limits.max_header_bytes`: each header's name,
/// value and the four bytes of `: ` and CRLF.
fn head_size<B>(req: &Request<B>) -> usize {
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// ACME tokens are base64url (RFC 8555 section 8.3).
fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `X-Forwarded-For` for the upstream: behind a trusted proxy, the chain received with the
/// proxy appended; from anyone else, the peer alone (a forged chain is dropped).
fn forwarded_for(conn: &Conn, client: &Client, req: &Request<Incoming>) -> HeaderValue {
    if !client.peer_trusted {
        return conn.peer_value.clone();
    }
    let mut chain = String::new();
    for v in req.headers().get_all(&XFF) {
        if let Ok(s) = v.to_str() {
            chain.push_str(s);
            chain.push_str(", ");
        }
    }
    if chain.is_empty() {
        return conn.peer_value.clone();
    }
    chain.push_str(conn.peer_value.to_str().unwrap_or_default());
    HeaderValue::from_str(&chain).unwrap_or_else(|_| conn.peer_value.clone())
}

/// The request's id: the one sent by a trusted proxy when it is sane, else a new one.
fn request_id(shared: &Shared, client: &Client, req: &Request<Incoming>) -> HeaderValue {
    if client.peer_trusted {
        if let Some(v) = req.headers().get(&X_REQUEST_ID) {
            if !v.is_empty() && v.len() <= 128 {
                return v.clone();
            }
        }
    }
    shared.ids.next()
}

/// Makes request ids: 32 hex digits, a per-process random half and a counter.
pub(crate) struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS; mixing in time and pid keeps ids distinct across
        // restarts without another dependency.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        RequestIds {
            prefix: h.finish(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        for (i, b) in buf.iter_mut().enumerate() {
            let word = if i < 16 { self.prefix } else { n };
            let shift = (15 - (i % 16)) * 4;
            *b = HEX[((word >> shift) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf).expect("hex digits are a valid header value")
    }
}
