use std::time::{Duration, UNIX_EPOCH};

use http::{Method, StatusCode};
use http_body_util::BodyExt;

use super::*;

/// The value of the one sample line that starts with `series` (name and
/// labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_family_is_exported_at_zero_before_any_event() {
    let text = Metrics::new("1.2.3").render();
    for family in [
        "edge_gateway_requests_total",
        "edge_gateway_request_duration_seconds",
        "edge_gateway_upstream_errors_total",
        "edge_gateway_denied_requests_total",
        "edge_gateway_tls_handshake_failures_total",
        "edge_gateway_open_connections",
        "edge_gateway_config_reloads_total",
        "edge_gateway_config_last_reload_success_timestamp_seconds",
        "edge_gateway_config_last_reload_successful",
        "edge_gateway_acme_renewals_total",
        "edge_gateway_build_info",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    for series in [
        r#"edge_gateway_requests_total{class="2xx",listener="https"}"#,
        r#"edge_gateway_requests_total{class="5xx",listener="http"}"#,
        r#"edge_gateway_request_duration_seconds_count{listener="https"}"#,
        r#"edge_gateway_upstream_errors_total{kind="connect-refused"}"#,
        r#"edge_gateway_upstream_errors_total{kind="connect-timeout"}"#,
        r#"edge_gateway_upstream_errors_total{kind="unreachable"}"#,
        r#"edge_gateway_upstream_errors_total{kind="connect"}"#,
        r#"edge_gateway_upstream_errors_total{kind="timeout"}"#,
        r#"edge_gateway_upstream_errors_total{kind="closed"}"#,
        r#"edge_gateway_upstream_errors_total{kind="protocol"}"#,
        r#"edge_gateway_denied_requests_total{reason="deny"}"#,
        r#"edge_gateway_denied_requests_total{reason="not-allowed"}"#,
        "edge_gateway_tls_handshake_failures_total",
        r#"edge_gateway_open_connections{listener="http"}"#,
        r#"edge_gateway_config_reloads_total{result="failure"}"#,
        r#"edge_gateway_config_reloads_total{result="success"}"#,
        r#"edge_gateway_acme_renewals_total{result="failure"}"#,
    ] {
        assert_eq!(
            sample(&text, series),
            Some(0.0),
            "{series} not at zero:\n{text}"
        );
    }
    assert_eq!(
        sample(&text, r#"edge_gateway_build_info{version="1.2.3"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "edge_gateway_config_last_reload_successful"),
        Some(1.0)
    );
    // The certificate family has one series per served name; the names come
    // with the first certificate loaded, before the daemon reports ready.
    assert!(!text.contains("edge_gateway_certificate_expiry_timestamp_seconds{"));
}

#[test]
fn requests_are_counted_by_listener_and_class() {
    let m = Metrics::new("0");
    m.request(Listener::Https, 200, Duration::from_millis(3));
    m.request(Listener::Https, 204, Duration::from_millis(3));
    m.request(Listener::Http, 301, Duration::from_micros(200));
    m.request(Listener::Https, 503, Duration::from_secs(2));
    m.request(Listener::Https, 999, Duration::from_secs(2));
    let text = m.render();
    let https_2xx = r#"edge_gateway_requests_total{class="2xx",listener="https"}"#;
    assert_eq!(sample(&text, https_2xx), Some(2.0));
    let http_3xx = r#"edge_gateway_requests_total{class="3xx",listener="http"}"#;
    assert_eq!(sample(&text, http_3xx), Some(1.0));
    let https_5xx = r#"edge_gateway_requests_total{class="5xx",listener="https"}"#;
    assert_eq!(sample(&text, https_5xx), Some(2.0));
    let count = r#"edge_gateway_request_duration_seconds_count{listener="https"}"#;
    assert_eq!(sample(&text, count), Some(4.0));
    let fast = r#"edge_gateway_request_duration_seconds_bucket{listener="https",le="0.005"}"#;
    assert_eq!(sample(&text, fast), Some(2.0));
}

#[test]
fn connection_gauge_follows_opens_and_closes() {
    let m = Metrics::new("0");
    let series = r#"edge_gateway_open_connections{listener="https"}"#;
    m.on_connection_opened(Listener::Https);
    m.on_connection_opened(Listener::Https);
    m.on_connection_opened(Listener::Http);
    assert_eq!(sample(&m.render(), series), Some(2.0));
    m.on_connection_closed(Listener::Https);
    assert_eq!(sample(&m.render(), series), Some(1.0));
    m.on_connection_closed(Listener::Https);
    assert_eq!(sample(&m.render(), series), Some(0.0));
    let http = r#"edge_gateway_open_connections{listener="http"}"#;
    assert_eq!(sample(&m.render(), http), Some(1.0));
}

#[test]
fn a_refused_reload_is_counted_and_keeps_the_last_success_time() {
    let m = Metrics::new("0");
    m.reload(Outcome::Success);
    let text = m.render();
    let loaded = sample(
        &text,
        "edge_gateway_config_last_reload_success_timestamp_seconds",
    );
    assert!(loaded.is_some_and(|t| t > 1.6e9), "{text}");
    m.reload(Outcome::Failure);
    let text = m.render();
    assert_eq!(
        sample(
            &text,
            r#"edge_gateway_config_reloads_total{result="failure"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"edge_gateway_config_reloads_total{result="success"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "edge_gateway_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "edge_gateway_config_last_reload_success_timestamp_seconds"
        ),
        loaded
    );
}

#[test]
fn certificate_expiry_is_per_name_and_follows_the_configuration() {
    let m = Metrics::new("0");
    m.certificate_expiry(
        "app.example.com",
        UNIX_EPOCH + Duration::from_secs(1_900_000_000),
    );
    m.certificate_expiry(
        "old.example.com",
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    );
    let app = r#"edge_gateway_certificate_expiry_timestamp_seconds{name="app.example.com"}"#;
    let old = r#"edge_gateway_certificate_expiry_timestamp_seconds{name="old.example.com"}"#;
    assert_eq!(sample(&m.render(), app), Some(1.9e9));
    m.retain_certificates(["app.example.com"]);
    let text = m.render();
    assert_eq!(sample(&text, app), Some(1.9e9));
    assert_eq!(sample(&text, old), None, "{text}");
}

#[test]
fn denials_upstream_errors_handshakes_and_renewals_are_counted() {
    let m = Metrics::new("0");
    m.denied(Decision::NotAllowed);
    m.denied(Decision::NotAllowed);
    m.denied(Decision::Denied);
    m.denied(Decision::Allowed);
    m.upstream_error(ErrorKind::Timeout);
    // A client's fault is no upstream error.
    m.upstream_error(ErrorKind::BodyTooLarge);
    m.on_tls_handshake_failed();
    m.acme_renewal(Outcome::Success);
    let text = m.render();
    let not_allowed = r#"edge_gateway_denied_requests_total{reason="not-allowed"}"#;
    assert_eq!(sample(&text, not_allowed), Some(2.0));
    let deny = r#"edge_gateway_denied_requests_total{reason="deny"}"#;
    assert_eq!(sample(&text, deny), Some(1.0));
    let timeout = r#"edge_gateway_upstream_errors_total{kind="timeout"}"#;
    assert_eq!(sample(&text, timeout), Some(1.0));
    let upstream_total: f64 = text
        .lines()
        .filter(|l| l.starts_with("edge_gateway_upstream_errors_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(upstream_total, 1.0, "{text}");
    assert_eq!(
        sample(&text, "edge_gateway_tls_handshake_failures_total"),
        Some(1.0)
    );
    let renewed = r#"edge_gateway_acme_renewals_total{result="success"}"#;
    assert_eq!(sample(&text, renewed), Some(1.0));
}

#[tokio::test]
async fn the_listener_serves_metrics_only() {
    let m = Metrics::new("0");
    let ok = server::respond(&m, &Method::GET, "/metrics");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()[http::header::CONTENT_TYPE], CONTENT_TYPE);
    let body = ok.into_body().collect().await.unwrap().to_bytes();
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("edge_gateway_build_info"));

    let post = server::respond(&m, &Method::POST, "/metrics");
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()[http::header::ALLOW], "GET, HEAD");
    assert_eq!(
        server::respond(&m, &Method::GET, "/").status(),
        StatusCode::NOT_FOUND
    );
}
