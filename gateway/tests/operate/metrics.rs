//! The metrics listener, scraped as Prometheus would, its text asserted.

use std::net::Ipv4Addr;

use http::StatusCode;
use tokio::net::TcpStream;

use crate::harness::{get, plain_get, sample, Gateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_there_from_the_start_and_counts_what_happens() {
    let upstream = Upstream::start().await;
    let access = r#"allow = ["127.0.0.0/29"]
deny = ["127.0.0.4/32"]"#;
    let gw = Gateway::start(upstream.addr, access, None).await;

    // Before any request: every family, every known label value at zero.
    let text = gw.scrape().await;
    assert_samples(
        &text,
        r#"
edge_gateway_requests_total{class="2xx",listener="https"} 0
edge_gateway_requests_total{class="3xx",listener="http"} 0
edge_gateway_request_duration_seconds_count{listener="https"} 0
edge_gateway_upstream_errors_total{kind="connect-refused"} 0
edge_gateway_upstream_errors_total{kind="timeout"} 0
edge_gateway_denied_requests_total{reason="deny"} 0
edge_gateway_denied_requests_total{reason="not-allowed"} 0
edge_gateway_tls_handshake_failures_total 0
edge_gateway_config_reloads_total{result="success"} 0
edge_gateway_config_reloads_total{result="failure"} 0
edge_gateway_acme_renewals_total{result="success"} 0
edge_gateway_acme_renewals_total{result="failure"} 0
"#,
    );
    let version = format!(
        r#"edge_gateway_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), Some(1.0), "{text}");
    let expiry = r#"edge_gateway_certificate_expiry_timestamp_seconds{name="localhost"}"#;
    assert_eq!(
        sample(&text, expiry),
        Some(gw.leaf.not_after as f64),
        "{text}"
    );
    let loaded = sample(
        &text,
        "edge_gateway_config_last_reload_success_timestamp_seconds",
    );
    assert!(loaded.is_some_and(|t| t > 1.7e9), "{text}");

    // Three proxied requests on one connection, held open while scraping.
    let client = gw.client(Ipv4Addr::new(127, 0, 0, 1));
    let mut open = client.connect().await.unwrap();
    for _ in 0..3 {
        assert_eq!(get(&mut open, "/").await.unwrap().0, StatusCode::OK);
    }
    // A redirect on the HTTP listener.
    let stream = TcpStream::connect(gw.ports.http).await.unwrap();
    let (code, _) = plain_get(stream, "/x?y=1").await.unwrap();
    assert_eq!(code, StatusCode::MOVED_PERMANENTLY);
    // Outside the allow range, and in the deny range.
    for source in [Ipv4Addr::new(127, 0, 0, 9), Ipv4Addr::new(127, 0, 0, 4)] {
        let (code, _) = gw.client(source).get_once("/").await.unwrap();
        assert_eq!(code, StatusCode::FORBIDDEN, "from {source}");
    }
    // A handshake that fails: TLS 1.1 is refused... by rustls the client cannot even offer it,
    // so send bytes that are no TLS at all.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = TcpStream::connect(gw.ports.https).await.unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = raw.read_to_end(&mut sink).await;
    }

    // The failed handshake and the closed connections are counted as the server's side of
    // each connection ends, which may be just after the client saw it end.
    gw.scrape_until("edge_gateway_tls_handshake_failures_total", 1.0)
        .await;
    let open_https = r#"edge_gateway_open_connections{listener="https"}"#;
    let text = gw.scrape_until(open_https, 1.0).await;
    assert_samples(
        &text,
        r#"
edge_gateway_requests_total{class="2xx",listener="https"} 3
edge_gateway_requests_total{class="3xx",listener="http"} 1
edge_gateway_requests_total{class="4xx",listener="https"} 2
edge_gateway_denied_requests_total{reason="not-allowed"} 1
edge_gateway_denied_requests_total{reason="deny"} 1
edge_gateway_request_duration_seconds_count{listener="https"} 5
edge_gateway_tls_handshake_failures_total 1
"#,
    );
    drop(open);
    gw.scrape_until(open_https, 0.0).await;

    // The upstream moves to a port where nothing listens: the next request is a 502,
    // counted by kind.
    let dead = crate::harness::free_port();
    let moved = gw
        .config_with_access(access)
        .replace(&gw.upstream.to_string(), &format!("127.0.0.1:{dead}"));
    gw.write_config(&moved);
    gw.reload().await;
    let (code, _) = client.get_once("/").await.unwrap();
    assert_eq!(code, StatusCode::BAD_GATEWAY);
    assert_samples(
        &gw.scrape().await,
        r#"
edge_gateway_upstream_errors_total{kind="connect-refused"} 1
edge_gateway_requests_total{class="5xx",listener="https"} 1
"#,
    );
}

/// Asserts that the scrape `text` holds each line of `expected`: a series and its value, as
/// the text format writes them.
fn assert_samples(text: &str, expected: &str) {
    for line in expected.lines().filter(|l| !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        assert_eq!(sample(text, series), Some(value), "{series}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_serves_nothing_but_metrics() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr, "", None).await;
    let stream = TcpStream::connect(gw.ports.metrics).await.unwrap();
    let (code, _) = plain_get(stream, "/").await.unwrap();
    assert_eq!(code, StatusCode::NOT_FOUND);
    // And the public listeners do not serve it.
    let stream = TcpStream::connect(gw.ports.http).await.unwrap();
    let (code, _) = plain_get(stream, "/metrics").await.unwrap();
    assert_eq!(code, StatusCode::MOVED_PERMANENTLY);
}
