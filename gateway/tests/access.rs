//! CIDR access control on both listeners: allow, deny, deny wins, IPv4 and IPv6 loopback,
//! IPv4 clients on a dual-stack listener, and X-Forwarded-For only from trusted proxies.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::{
    get, http_get, https_get, https_h1, proxying_with, send, Config, Gateway, Pki, Seen, TempDir,
    Upstream,
};
use http::Request;
use http_body_util::Full;

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// A gateway listening on `listen` (an address without its port) with `access` as its
/// `[access]` table.
async fn setup(listen: &str, access: &str) -> (Gateway, Pki, Upstream, TempDir) {
    proxying_with(|cfg| {
        cfg.http = format!("{listen}:0");
        cfg.https = format!("{listen}:0");
        cfg.access = access.into();
    })
    .await
}

#[tokio::test]
async fn allow_deny_and_deny_wins_on_ipv4_loopback() {
    // 127.0.0.0/29 is allowed, but 127.0.0.3 is denied; 127.0.0.9 is in no allowed range.
    let (gw, pki, _up, _dir) = setup(
        "127.0.0.1",
        r#"allow = ["127.0.0.0/29"]
deny = ["127.0.0.3"]"#,
    )
    .await;
    let allowed = https_get(&pki, ip("127.0.0.2"), gw.https, "/").await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.text(), "hello from upstream");

    let denied = https_get(&pki, ip("127.0.0.3"), gw.https, "/").await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.text(),
        "403 Forbidden: your address is in a denied range\n"
    );
    assert!(denied.header("strict-transport-security").is_some());

    let outside = https_get(&pki, ip("127.0.0.9"), gw.https, "/").await;
    assert_eq!(outside.status, 403);
    assert_eq!(
        outside.text(),
        "403 Forbidden: your address is not in an allowed range\n"
    );

    // The HTTP listener filters too (a 403, not a redirect).
    assert_eq!(http_get(ip("127.0.0.2"), gw.http, "/").await.status, 301);
    let denied = http_get(ip("127.0.0.3"), gw.http, "/").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("location"), None);
    assert_eq!(http_get(ip("127.0.0.9"), gw.http, "/").await.status, 403);
}

#[tokio::test]
async fn ipv6_loopback_rules() {
    let (gw, pki, _up, _dir) = setup("[::1]", r#"allow = ["::1/128"]"#).await;
    assert_eq!(https_get(&pki, None, gw.https, "/").await.status, 200);
    assert_eq!(http_get(None, gw.http, "/").await.status, 301);

    let (gw, pki, _up, _dir) = setup("[::1]", r#"allow = ["2001:db8::/32"]"#).await;
    assert_eq!(https_get(&pki, None, gw.https, "/").await.status, 403);

    let (gw, pki, _up, _dir) = setup(
        "[::1]",
        r#"allow = ["::/0"]
deny = ["::1"]"#,
    )
    .await;
    let got = https_get(&pki, None, gw.https, "/").await;
    assert_eq!(got.status, 403);
    assert!(got.text().contains("denied range"));
}

#[tokio::test]
async fn an_ipv4_client_on_a_dual_stack_listener_is_matched_by_ipv4_rules() {
    let (gw, pki, up, _dir) = setup(
        "[::]",
        r#"allow = ["127.0.0.0/29"]
deny = ["127.0.0.3/32"]"#,
    )
    .await;
    let v4 = |port| std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), port);
    let got = https_get(&pki, ip("127.0.0.2"), v4(gw.https.port()), "/headers").await;
    assert_eq!(got.status, 200, "{}", got.text());
    // Logged and forwarded in its IPv4 form, not as ::ffff:127.0.0.2.
    let seen = Seen::parse(&got.body);
    assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.2"));
    assert_eq!(
        https_get(&pki, ip("127.0.0.3"), v4(gw.https.port()), "/")
            .await
            .status,
        403
    );
    assert_eq!(
        http_get(ip("127.0.0.3"), v4(gw.http.port()), "/")
            .await
            .status,
        403
    );
    // IPv6 loopback on the same listener is in no allowed range.
    let v6 = std::net::SocketAddr::new("::1".parse().unwrap(), gw.https.port());
    assert_eq!(https_get(&pki, None, v6, "/").await.status, 403);
    drop(up);
}

fn with_xff(path: &str, xff: &str) -> Request<Full<bytes::Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .header("x-forwarded-for", xff)
        .header("x-request-id", "forged-id")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn a_forged_forwarded_for_from_an_untrusted_peer_is_ignored_and_replaced() {
    // 127.0.0.1 is no trusted proxy. Claiming an allowed address does not let it in...
    let (gw, pki, _up, _dir) = setup("127.0.0.1", r#"allow = ["203.0.113.0/28"]"#).await;
    let mut sender = https_h1(&pki, ip("127.0.0.1"), gw.https).await;
    let got = send(&mut sender, with_xff("/headers", "203.0.113.10")).await;
    assert_eq!(got.status, 403);

    // ...and when it is allowed, the upstream sees only its real address and a new id.
    let (gw, pki, _up, _dir) = setup("127.0.0.1", r#"allow = ["127.0.0.0/8"]"#).await;
    let mut sender = https_h1(&pki, ip("127.0.0.4"), gw.https).await;
    let got = send(&mut sender, with_xff("/headers", "203.0.113.10, 10.0.0.1")).await;
    assert_eq!(got.status, 200);
    let seen = Seen::parse(&got.body);
    assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.4"));
    let id = seen.one("x-request-id").unwrap();
    assert_ne!(id, "forged-id");
    assert_eq!(id.len(), 32);
    assert_eq!(got.header("x-request-id"), Some(id));
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_decides() {
    let (gw, pki, _up, _dir) = setup(
        "127.0.0.1",
        r#"allow = ["203.0.113.0/28"]
trusted_proxies = ["127.0.0.5/32", "10.0.0.0/8"]"#,
    )
    .await;
    let mut sender = https_h1(&pki, ip("127.0.0.5"), gw.https).await;
    // Right-most address that is not a trusted proxy: 203.0.113.10 (10.0.0.7 is a proxy).
    let got = send(
        &mut sender,
        with_xff("/headers", "198.51.100.1, 203.0.113.10, 10.0.0.7"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = Seen::parse(&got.body);
    assert_eq!(
        seen.one("x-forwarded-for"),
        Some("198.51.100.1, 203.0.113.10, 10.0.0.7, 127.0.0.5")
    );
    // A trusted proxy's request id is kept.
    assert_eq!(seen.one("x-request-id"), Some("forged-id"));

    let got = send(&mut sender, with_xff("/", "203.0.113.10, 203.0.113.200")).await;
    assert_eq!(got.status, 403);
    // The proxy itself, with no header, is outside the allowed range.
    let got = send(&mut sender, get("/")).await;
    assert_eq!(got.status, 403);
}

#[tokio::test]
async fn a_swapped_snapshot_applies_to_the_next_request_on_an_open_connection() {
    let (dir, pki, up) = (TempDir::new(), Pki::new(), Upstream::start().await);
    let cfg = Config::new(&up.url(), &dir, &pki);
    let gw = Gateway::start(&cfg).await;
    let mut sender = https_h1(&pki, ip("127.0.0.1"), gw.https).await;
    assert_eq!(send(&mut sender, get("/")).await.status, 200);

    let mut denying = Config::new(&up.url(), &dir, &pki);
    denying.access = r#"deny = ["127.0.0.1"]"#.into();
    let settings = edge_gateway::Settings::from_toml_str(&denying.render()).unwrap();
    let next = edge_gateway::Snapshot::reload(&settings, gw.https.port(), &gw.live.load());
    gw.live.store(Arc::new(next));
    // Same keep-alive connection, new rules.
    assert_eq!(send(&mut sender, get("/")).await.status, 403);
}
