//! The real binary: a request in flight finishes across SIGTERM, the process exits 0, and
//! each request leaves one structured access line.

mod common;

use std::time::Duration;

use common::{free_port, get, https_get, https_h1, send, Config, Pki, Process, TempDir, Upstream};

/// Writes a configuration for `upstream` (a URL) with JSON logs and `extra` tables.
fn config(upstream: &str, dir: &TempDir, pki: &Pki, extra: &str) -> std::path::PathBuf {
    let mut cfg = Config::new(upstream, dir, pki);
    cfg.extra = format!("[log]\nformat = \"json\"\n\n{extra}");
    dir.write("gateway.toml", &cfg.render())
}

async fn wait_for_line(p: &Process, needle: &str) {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while !p.log().iter().any(|l| l.contains(needle)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in {:?}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_request_in_flight_finishes_across_sigterm() {
    let (dir, pki, mut up) = (TempDir::new(), Pki::new(), Upstream::start().await);
    let path = config(
        &up.url(),
        &dir,
        &pki,
        "[timeouts]\nshutdown_grace = \"15s\"\n",
    );
    let (mut p, _http, https) = Process::run(&path);

    let mut sender = https_h1(&pki, None, https).await;
    let in_flight = tokio::spawn(async move { send(&mut sender, get("/hold")).await });
    tokio::time::timeout(common::PATIENCE, up.held.recv())
        .await
        .expect("the request never reached the upstream");

    p.signal("TERM");
    wait_for_line(&p, "Draining").await;
    // No new connections once draining.
    let refused = tokio::net::TcpStream::connect(https).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted while draining"
    );

    up.release.notify_one();
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "released");
    let status = p.exited().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sigint_stops_an_idle_gateway_with_status_0() {
    let (dir, pki, up) = (TempDir::new(), Pki::new(), Upstream::start().await);
    let path = config(&up.url(), &dir, &pki, "");
    let (mut p, _http, https) = Process::run(&path);
    // An idle keep-alive connection does not hold up the exit.
    let mut sender = https_h1(&pki, None, https).await;
    assert_eq!(send(&mut sender, get("/")).await.status, 200);
    p.signal("INT");
    let status = p.exited().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn access_lines_are_structured() {
    let (dir, pki, up) = (TempDir::new(), Pki::new(), Upstream::start().await);
    let path = config(&up.url(), &dir, &pki, "");
    let (p, http, https) = Process::run(&path);
    assert_eq!(https_get(&pki, None, https, "/a?b=1").await.status, 200);
    assert_eq!(common::http_get(None, http, "/r").await.status, 301);
    wait_for_line(&p, r#""http.path":"/r""#).await;

    let lines: Vec<serde_json::Value> = p
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["message"] == "Request")
        .collect();
    assert_eq!(lines.len(), 2, "{:?}", p.log());
    let line = &lines[0];
    assert_eq!(line["listener"], "https");
    assert_eq!(line["client.addr"], "127.0.0.1");
    assert_eq!(line["http.method"], "GET");
    assert_eq!(line["http.host"], "localhost");
    assert_eq!(line["http.path"], "/a?b=1");
    assert_eq!(line["http.status"], 200);
    assert_eq!(line["bytes"], 19);
    assert_eq!(line["tls.version"], "TLSv1.3");
    assert_eq!(line["decision"], "allow");
    assert!(
        line["duration_ms"].is_number() && line["upstream_ms"].is_number(),
        "{line}"
    );
    assert_eq!(lines[1]["http.status"], 301);
    assert_eq!(lines[1]["listener"], "http");
}

#[tokio::test]
async fn an_upstream_failure_is_logged_with_the_upstream_and_the_kind() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let port = free_port();
    let path = config(&format!("http://127.0.0.1:{port}"), &dir, &pki, "");
    let (p, _http, https) = Process::run(&path);
    assert_eq!(https_get(&pki, None, https, "/").await.status, 502);
    wait_for_line(&p, "Upstream request failed").await;
    let line: serde_json::Value = p
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "Upstream request failed")
        .unwrap();
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["upstream"], format!("127.0.0.1:{port}"));
    assert_eq!(line["error.kind"], "connect-refused");
    wait_for_line(&p, r#""error.kind":"connect-refused","#).await;
}
