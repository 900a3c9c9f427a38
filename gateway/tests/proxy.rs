//! Proxying: headers set and removed, errors mapped to 502/504/413/431, upgrades, pooling,
//! slow clients cut off, and one accounting record per request.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{
    free_port, get, https_get, https_h1, https_send, proxying, raw, send, tcp_from, tls_from,
    until_closed, Config, Gateway, Pki, Seen, TempDir,
};
use edge_gateway::observe::{RequestObserver, RequestRecord};
use edge_gateway::Hooks;
use http::Request;
use http_body_util::Full;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let (gw, pki, _up, _dir) = proxying("").await;
    let req = Request::get("/headers?a=1&b")
        .header("host", "app.example.com")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "named by connection")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-foo", "bar")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("upgrade", "h2c")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "forged.example")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = https_send(&pki, None, gw.https, req).await;
    assert_eq!(got.status, 200);
    let seen = Seen::parse(&got.body);
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "proxy-foo",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the upstream: {seen:?}"
        );
    }
    assert_eq!(seen.uri, "/headers?a=1&b");
    assert_eq!(seen.one("host"), Some("app.example.com"));
    assert_eq!(seen.one("x-end-to-end"), Some("kept"));
    assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.one("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.one("x-forwarded-host"), Some("app.example.com"));
    let id = seen.one("x-request-id").unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
}

#[tokio::test]
async fn a_connection_header_naming_host_does_not_remove_it() {
    let (gw, pki, _up, _dir) = proxying("").await;
    let req = Request::get("/headers")
        .header("host", "app.example.com")
        .header("connection", "host, x-forwarded-host")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = https_send(&pki, None, gw.https, req).await;
    assert_eq!(got.status, 200);
    let seen = Seen::parse(&got.body);
    assert_eq!(seen.one("host"), Some("app.example.com"));
    assert_eq!(seen.one("x-forwarded-host"), Some("app.example.com"));
}

#[tokio::test]
async fn a_refused_upstream_is_502() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let cfg = Config::new(&format!("http://127.0.0.1:{}", free_port()), &dir, &pki);
    let gw = Gateway::start(&cfg).await;
    let got = https_get(&pki, None, gw.https, "/").await;
    assert_eq!(got.status, 502);
    assert_eq!(
        got.text(),
        "502 Bad Gateway: the upstream refused the connection\n"
    );
}

#[tokio::test]
async fn an_upstream_past_its_timeout_is_504() {
    let (gw, pki, _up, _dir) = proxying("[timeouts]\nrequest = \"300ms\"\n").await;
    let got = https_get(&pki, None, gw.https, "/slow").await;
    assert_eq!(got.status, 504);
    assert_eq!(
        got.text(),
        "504 Gateway Timeout: the upstream did not answer in time\n"
    );
}

fn post(path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test]
async fn bodies_stream_and_a_body_over_the_limit_is_413() {
    let (gw, pki, _up, _dir) = proxying("[limits]\nmax_body_bytes = 100000\n").await;
    let mut sender = https_h1(&pki, None, gw.https).await;
    // Under the limit, with a Content-Length.
    let got = send(&mut sender, post("/count", vec![b'x'; 99_999])).await;
    assert_eq!(
        (got.status.as_u16(), got.text()),
        (200, "99999".to_string())
    );
    // Over it: refused from the Content-Length alone.
    let got = send(&mut sender, post("/count", vec![b'x'; 100_001])).await;
    assert_eq!(got.status, 413);
    assert_eq!(
        got.text(),
        "413 Content Too Large: the request body is too large\n"
    );

    // Over it without a Content-Length (chunked): refused while streaming.
    let tls = tls_from(&pki.h1_client(), None, gw.https).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = Frames(
        (0..40)
            .map(|_| Ok(Frame::data(Bytes::from(vec![b'y'; 4096]))))
            .collect(),
    );
    let req = Request::post("/count")
        .header("host", "localhost")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(common::PATIENCE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 413);
}

/// A body of frames that are all ready (a chunked upload of known pieces).
struct Frames(VecDeque<Result<Frame<Bytes>, Infallible>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front())
    }
}

#[tokio::test]
async fn headers_over_the_limit_are_431() {
    let (gw, pki, _up, _dir) = proxying("[limits]\nmax_header_bytes = 4096\n").await;
    for size in [5_000, 60_000] {
        let tls = tls_from(&pki.h1_client(), None, gw.https).await.unwrap();
        let head = format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "b".repeat(size)
        );
        let text = raw(tls, head.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 431"), "{size}: {text}");
    }
    let got = https_get(&pki, None, gw.https, "/").await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn upgrades_pass_through() {
    let (gw, pki, _up, _dir) = proxying("").await;
    let mut sender = https_h1(&pki, None, gw.https).await;
    let req = Request::get("/upgrade")
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "echo")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["upgrade"], "echo");
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    for msg in [&b"ping"[..], b"a longer message, both ways"] {
        io.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(common::PATIENCE, io.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg);
    }
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let (gw, pki, up, _dir) = proxying("").await;
    for _ in 0..20 {
        // A new client connection each time; the upstream side should be reused.
        assert_eq!(https_get(&pki, None, gw.https, "/").await.status, 200);
    }
    let opened = up.connections.load(Ordering::SeqCst);
    assert!(
        opened <= 2,
        "{opened} upstream connections for 20 sequential requests"
    );
}

#[tokio::test]
async fn a_client_sending_headers_too_slowly_is_cut_off() {
    let (gw, _pki, _up, _dir) = proxying("[timeouts]\nheader_read = \"1s\"\n").await;
    // Plain HTTP: half a request head, then silence.
    let mut tcp = tcp_from(None, gw.http).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n")
        .await
        .unwrap();
    let rest = until_closed(&mut tcp, "the connection").await;
    assert!(!String::from_utf8_lossy(&rest).contains("301"), "{rest:?}");

    // HTTPS: a TCP connection that never starts its handshake.
    let mut tcp = tcp_from(None, gw.https).await;
    until_closed(&mut tcp, "the silent TLS connection").await;
}

#[tokio::test]
async fn connections_that_send_nothing_are_cut_off_and_free_the_connection_limit() {
    let extra = "[timeouts]\nheader_read = \"1s\"\n\n[limits]\nmax_connections = 2\n";
    let (gw, pki, _up, _dir) = proxying(extra).await;
    // Two silent connections, from a denied address even, take every slot...
    let denied = Some("127.0.0.3".parse().unwrap());
    let mut silent = vec![
        tcp_from(denied, gw.http).await,
        tcp_from(denied, gw.https).await,
    ];
    // ...until the header timeout closes them; then others are served.
    assert_eq!(common::http_get(None, gw.http, "/").await.status, 301);
    for tcp in &mut silent {
        let rest = until_closed(tcp, "a silent connection").await;
        assert!(rest.is_empty(), "{rest:?}");
    }
    // A TLS connection that finishes its handshake and then sends no request is closed too.
    let mut tls = tls_from(&pki.h1_client(), None, gw.https).await.unwrap();
    let rest = until_closed(&mut tls, "a silent TLS connection").await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[derive(Default)]
struct Collect(Mutex<Vec<RequestRecord>>);

impl RequestObserver for Collect {
    fn on_request(&self, record: &RequestRecord, _total: Duration) {
        self.0.lock().unwrap().push(record.clone());
    }
}

#[tokio::test]
async fn every_request_is_accounted_once_with_its_outcome() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let mut cfg = Config::new(&format!("http://127.0.0.1:{}", free_port()), &dir, &pki);
    cfg.access = r#"deny = ["127.0.0.7"]"#.into();
    let collect = Arc::new(Collect::default());
    let hooks = Hooks {
        observer: collect.clone(),
        ..Hooks::default()
    };
    let gw = Gateway::start_with(&cfg, hooks).await;
    assert_eq!(https_get(&pki, None, gw.https, "/p?q").await.status, 502);
    let ip7 = Some("127.0.0.7".parse().unwrap());
    assert_eq!(https_get(&pki, ip7, gw.https, "/").await.status, 403);
    assert_eq!(common::http_get(None, gw.http, "/r").await.status, 301);
    // The record is finished when the body is done; give the server a moment to drop it.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while collect.0.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "records missing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let records = collect.0.lock().unwrap().clone();
    assert_eq!(records.len(), 3);
    let by_status = |s: u16| records.iter().find(|r| r.status == s).unwrap();
    let r502 = by_status(502);
    assert_eq!(r502.listener.as_str(), "https");
    assert_eq!(r502.error.map(|k| k.as_str()), Some("connect-refused"));
    assert_eq!(r502.decision, "allow");
    assert_eq!(r502.tls_version, Some("TLSv1.3"));
    assert_eq!(r502.path.as_ref().unwrap().as_str(), "/p?q");
    assert!(r502.upstream.is_some());
    let r403 = by_status(403);
    assert_eq!(
        (r403.decision, r403.client.to_string()),
        ("deny", "127.0.0.7".to_string())
    );
    let r301 = by_status(301);
    assert_eq!((r301.listener.as_str(), r301.tls_version), ("http", None));
}

#[tokio::test]
async fn requests_on_one_keep_alive_connection_are_independent() {
    let (gw, pki, _up, _dir) = proxying("").await;
    let mut sender = https_h1(&pki, None, gw.https).await;
    for i in 0..5 {
        let got = send(&mut sender, get(&format!("/headers?i={i}"))).await;
        assert_eq!(Seen::parse(&got.body).uri, format!("/headers?i={i}"));
    }
}
