//! The HTTP listener: permanent redirects to HTTPS, 400 for bad hosts, ACME challenges routed
//! past the redirect and the filter.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{raw, tcp_from, Config, Gateway, Pki, TempDir};
use edge_gateway::{ChallengeResponder, Hooks};

async fn gateway(extra: &str, access: &str) -> (Gateway, TempDir) {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let mut cfg = Config::new("http://127.0.0.1:9", &dir, &pki);
    cfg.extra = extra.into();
    cfg.access = access.into();
    (Gateway::start(&cfg).await, dir)
}

/// Sends `head` (the request line and headers, CRLF-separated, no final blank line) and
/// returns the status code and Location.
async fn ask(gw: &Gateway, head: &str) -> (u16, Option<String>, String) {
    let tcp = tcp_from(None, gw.http).await;
    let text = raw(
        tcp,
        format!("{head}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let location = text
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::to_string);
    (status, location, text)
}

#[tokio::test]
async fn redirects_keep_path_and_query_byte_for_byte() {
    let (gw, _dir) = gateway("[redirect]\nhttps_port = 443\n", "").await;
    let cases = [
        (
            "GET /any/path?q=1 HTTP/1.1\r\nHost: app.example.com",
            "https://app.example.com/any/path?q=1",
        ),
        (
            "GET / HTTP/1.1\r\nHost: app.example.com",
            "https://app.example.com/",
        ),
        (
            "GET /a%20b/%7Euser?x=%41&y=a+b&&z HTTP/1.1\r\nHost: app.example.com",
            "https://app.example.com/a%20b/%7Euser?x=%41&y=a+b&&z",
        ),
        (
            "GET /p?q=1 HTTP/1.1\r\nHost: app.example.com:80",
            "https://app.example.com/p?q=1",
        ),
        (
            "GET /p HTTP/1.1\r\nHost: app.example.com:8080",
            "https://app.example.com/p",
        ),
        (
            "GET /p HTTP/1.1\r\nHost: [2001:db8::1]:80",
            "https://[2001:db8::1]/p",
        ),
        ("GET /p HTTP/1.1\r\nHost: [::1]", "https://[::1]/p"),
        (
            "GET /p HTTP/1.1\r\nHost: 198.51.100.10",
            "https://198.51.100.10/p",
        ),
        (
            "GET /p HTTP/1.1\r\nHost: App.Example.COM.",
            "https://App.Example.COM./p",
        ),
        (
            "GET http://app.example.com:80/abs?x=1 HTTP/1.1\r\nHost: other.example",
            "https://app.example.com/abs?x=1",
        ),
        (
            "HEAD /h HTTP/1.1\r\nHost: app.example.com",
            "https://app.example.com/h",
        ),
    ];
    for (head, location) in cases {
        let (status, got, text) = ask(&gw, head).await;
        assert_eq!(status, 301, "{head}: {text}");
        assert_eq!(got.as_deref(), Some(location), "{head}: {text}");
    }
}

#[tokio::test]
async fn other_methods_get_308_and_statuses_are_configurable() {
    let (gw, _dir) = gateway("[redirect]\nhttps_port = 443\n", "").await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let head =
            format!("{method} /form?x=1 HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 0");
        let (status, location, _) = ask(&gw, &head).await;
        assert_eq!(status, 308, "{method}");
        assert_eq!(
            location.as_deref(),
            Some("https://app.example.com/form?x=1")
        );
    }
    let (gw, _dir) = gateway("[redirect]\nstatus = 308\nstatus_other_methods = 307\n", "").await;
    let (status, _, _) = ask(&gw, "GET / HTTP/1.1\r\nHost: a.example").await;
    assert_eq!(status, 308);
    let (status, _, _) = ask(
        &gw,
        "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0",
    )
    .await;
    assert_eq!(status, 307);
}

#[tokio::test]
async fn the_port_comes_from_the_https_listener_never_from_the_request() {
    // No https_port: the HTTPS listener's own (random, not 443) port is used.
    let (gw, _dir) = gateway("", "").await;
    let port = gw.https.port();
    let (status, location, _) = ask(&gw, "GET /x?y HTTP/1.1\r\nHost: app.example.com:80").await;
    assert_eq!(status, 301);
    assert_eq!(
        location.unwrap(),
        format!("https://app.example.com:{port}/x?y")
    );
    let (_, location, _) = ask(&gw, "GET /x HTTP/1.1\r\nHost: [::1]:8443").await;
    assert_eq!(location.unwrap(), format!("https://[::1]:{port}/x"));

    let (gw, _dir) = gateway("[redirect]\nhttps_port = 8443\n", "").await;
    let (_, location, _) = ask(&gw, "GET /x HTTP/1.1\r\nHost: app.example.com:443").await;
    assert_eq!(location.unwrap(), "https://app.example.com:8443/x");
}

#[tokio::test]
async fn missing_or_malformed_hosts_get_400_without_location() {
    let (gw, _dir) = gateway("", "").await;
    let cases = [
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r\nHost: ",
        "GET / HTTP/1.1\r\nHost: a b",
        "GET / HTTP/1.1\r\nHost: user@evil.example",
        "GET / HTTP/1.1\r\nHost: evil.example:99999",
        "GET / HTTP/1.1\r\nHost: evil.example:x",
        "GET / HTTP/1.1\r\nHost: [::1",
        "GET / HTTP/1.1\r\nHost: [nothex]:80",
        "GET / HTTP/1.1\r\nHost: -bad.example",
        "GET / HTTP/1.1\r\nHost: a..b",
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example",
        "GET / HTTP/1.0",
    ];
    for head in cases {
        let (status, location, text) = ask(&gw, head).await;
        assert_eq!(status, 400, "{head:?}: {text}");
        assert_eq!(location, None, "{head:?}: {text}");
    }
}

#[tokio::test]
async fn challenges_pass_the_redirect_and_the_filter() {
    // Loopback is outside the allowed range: everything else is 403 here.
    let (gw, _dir) = gateway("", r#"allow = ["203.0.113.0/28"]"#).await;
    let (status, location, text) = ask(
        &gw,
        "GET /.well-known/acme-challenge/abc_DEF-123 HTTP/1.1\r\nHost: app.example.com",
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(location, None);
    let (status, _, text) = ask(&gw, "GET /other HTTP/1.1\r\nHost: app.example.com").await;
    assert_eq!(status, 403);
    assert!(text.contains("not in an allowed range"), "{text}");
}

/// Answers `tok123`, and keeps every token it is asked for.
#[derive(Default)]
struct OneToken(std::sync::Mutex<Vec<String>>);

impl ChallengeResponder for OneToken {
    fn respond(&self, token: &str) -> Option<Bytes> {
        self.0.lock().unwrap().push(token.to_owned());
        (token == "tok123").then(|| Bytes::from_static(b"tok123.thumbprint"))
    }
}

#[tokio::test]
async fn a_plugged_in_responder_answers_its_tokens() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let mut cfg = Config::new("http://127.0.0.1:9", &dir, &pki);
    cfg.access = r#"deny = ["0.0.0.0/0", "::/0"]"#.into();
    let responder = Arc::new(OneToken::default());
    let hooks = Hooks {
        challenges: responder.clone(),
        ..Hooks::default()
    };
    let gw = Gateway::start_with(&cfg, hooks).await;
    let (status, _, text) = ask(
        &gw,
        "GET /.well-known/acme-challenge/tok123 HTTP/1.1\r\nHost: app.example.com",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("tok123.thumbprint"), "{text}");
    // Under the prefix, whatever the token, the answer is 404 (never 403, never a redirect);
    // a token that is not base64url never reaches the responder.
    for path in [
        "other",
        "../../etc",
        "%2e%2e/x",
        "tok123/",
        "tok123%00",
        "tok.123",
        "",
    ] {
        let head = format!("GET /.well-known/acme-challenge/{path} HTTP/1.1\r\nHost: a.b");
        let (status, location, text) = ask(&gw, &head).await;
        assert_eq!((status, location), (404, None), "{path:?}: {text}");
    }
    assert_eq!(*responder.0.lock().unwrap(), ["tok123", "other"]);
    // Only the prefix with its slash escapes the filter.
    for path in [
        "/.well-known/acme-challenge",
        "/.well-known/acme-challengeX/tok123",
    ] {
        let (status, _, text) = ask(&gw, &format!("GET {path} HTTP/1.1\r\nHost: a.b")).await;
        assert_eq!(status, 403, "{path}: {text}");
    }
}
