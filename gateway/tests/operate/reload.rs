//! Hot reload: under load nothing is lost, changes apply from the next request on, a bad
//! configuration changes nothing, listeners and certificates follow the file.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;

use crate::harness::{field, get, install_leaf, sample, Gateway, Upstream};

const OFFICE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Tallies of a client loop: requests answered 200, and every failure with what it was.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, result: Result<(StatusCode, bytes::Bytes), String>) {
        match result {
            Ok((StatusCode::OK, _)) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok((code, body)) => self
                .failures
                .lock()
                .unwrap()
                .push(format!("{code}: {}", String::from_utf8_lossy(&body))),
            Err(e) => self.failures.lock().unwrap().push(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_nothing_and_a_removed_range_is_denied_next() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr, r#"allow = ["127.0.0.0/8"]"#, None).await;
    let client = gw.client(OFFICE);
    let stop = Arc::new(AtomicBool::new(false));
    let keep_alive = Arc::new(Tally::default());
    let fresh = Arc::new(Tally::default());

    // Two keep-alive loops: one connection each, a request as soon as the last one ended.
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (client, stop, tally) = (client.clone(), stop.clone(), keep_alive.clone());
        loops.push(tokio::spawn(async move {
            let mut sender = client.connect().await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                tally.record(get(&mut sender, "/").await);
            }
        }));
    }
    // One loop opening a new connection (TCP and TLS handshake) for every request.
    {
        let (client, stop, tally) = (client.clone(), stop.clone(), fresh.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tally.record(client.get_once("/").await);
            }
        }));
    }

    // Twenty reloads, each with a different file (the deny list grows), each waited for.
    for i in 0..20u8 {
        let access = format!(
            r#"allow = ["127.0.0.0/8"]
deny = ["10.{i}.0.0/16"]"#
        );
        gw.write_config(&gw.config_with_access(&access));
        let (_, ready) = gw.reload().await;
        let status = field(&ready, "STATUS").unwrap_or_default();
        assert!(!status.contains("refused"), "reload {i} refused: {status}");
    }
    let during = (
        keep_alive.ok.load(Ordering::Relaxed),
        fresh.ok.load(Ordering::Relaxed),
    );

    // A range removed by a reload: 127.0.0.1 loses its place; the very next request on a
    // connection opened before the reload is denied, and another address still passes.
    let mut open = client.connect().await.unwrap();
    assert_eq!(get(&mut open, "/").await.unwrap().0, StatusCode::OK);
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    gw.write_config(&gw.config_with_access(r#"allow = ["127.0.0.2/32"]"#));
    gw.reload().await;
    let (code, body) = get(&mut open, "/").await.unwrap();
    assert_eq!(
        code,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        gw.client(OTHER).get_once("/").await.unwrap().0,
        StatusCode::OK
    );

    let failures = [
        keep_alive.failures.lock().unwrap(),
        fresh.failures.lock().unwrap(),
    ];
    println!(
        "requests answered across 20 reloads: {} over keep-alive, {} on new connections",
        during.0, during.1
    );
    assert!(
        failures[0].is_empty(),
        "keep-alive failures: {:?}",
        failures[0]
    );
    assert!(
        failures[1].is_empty(),
        "new-connection failures: {:?}",
        failures[1]
    );
    // The loops really ran during the reloads, on both kinds of connection.
    assert!(during.0 > 0 && during.1 > 0, "{during:?}");
    let text = gw.scrape().await;
    let applied = sample(
        &text,
        r#"edge_gateway_config_reloads_total{result="success"}"#,
    );
    assert_eq!(applied, Some(21.0));
}

/// Each of these files fails on reload in its own way; the key or file it names is in the
/// status line.
fn bad_configs(gw: &Gateway) -> Vec<(&'static str, String, &'static str)> {
    let good = gw.config_with_access(r#"allow = ["127.0.0.1/32"]"#);
    let dir = gw.dir.path().display().to_string();
    vec![
        ("TOML syntax", format!("{good}\n[access\n"), "gateway.toml"),
        (
            "unknown key",
            good.replace("[upstream]\n", "[upstream]\nurll = \"http://x\"\n"),
            "urll",
        ),
        (
            "bad CIDR",
            gw.config_with_access(r#"allow = ["127.0.0.1/32", "10.0.0.300/8"]"#),
            "access.allow[1]",
        ),
        (
            "missing certificate file",
            good.replace(&format!("{dir}/cert.pem"), &format!("{dir}/missing.pem")),
            "missing.pem",
        ),
        (
            "bad duration",
            good.replace("shutdown_grace = \"10s\"", "shutdown_grace = \"ten\""),
            "timeouts.shutdown_grace",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_configuration_on_reload_leaves_the_old_one_in_force() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr, r#"allow = ["127.0.0.1/32"]"#, None).await;
    let client = gw.client(OFFICE);
    let mut open = client.connect().await.unwrap();

    let cases = bad_configs(&gw);
    for (n, (what, text, named)) in cases.iter().enumerate() {
        gw.write_config(text);
        let (_, ready) = gw.reload().await;
        let status = field(&ready, "STATUS").unwrap_or_default().to_string();
        assert!(status.contains("refused"), "{what}: status {status:?}");
        assert!(
            status.contains(named),
            "{what}: status {status:?} does not name {named}"
        );
        // The old configuration is in force: 127.0.0.1 passes, 127.0.0.2 does not, on open
        // and on new connections alike.
        assert_eq!(
            get(&mut open, "/").await.unwrap().0,
            StatusCode::OK,
            "{what}"
        );
        assert_eq!(
            client.get_once("/").await.unwrap().0,
            StatusCode::OK,
            "{what}"
        );
        let other = gw.client(OTHER).get_once("/").await.unwrap().0;
        assert_eq!(other, StatusCode::FORBIDDEN, "{what}");

        let text = gw.scrape().await;
        let failed = sample(
            &text,
            r#"edge_gateway_config_reloads_total{result="failure"}"#,
        );
        assert_eq!(failed, Some((n + 1) as f64), "{what}");
        assert_eq!(
            sample(&text, "edge_gateway_config_last_reload_successful"),
            Some(0.0)
        );
        // The log names the key (or file) and the reason.
        assert!(
            gw.log().contains(named),
            "{what}: log does not name {named}"
        );
    }

    // A good file again: applied, and the gauge says so.
    gw.write_config(&gw.config_with_access(r#"allow = ["127.0.0.2/32"]"#));
    let (_, ready) = gw.reload().await;
    assert!(!field(&ready, "STATUS")
        .unwrap_or_default()
        .contains("refused"));
    assert_eq!(get(&mut open, "/").await.unwrap().0, StatusCode::FORBIDDEN);
    let text = gw.scrape().await;
    assert_eq!(
        sample(&text, "edge_gateway_config_last_reload_successful"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_address_changed_is_rebound_and_one_that_cannot_bind_is_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr, "", None).await;
    let old_http = gw.ports.http;
    let new_http = std::net::SocketAddr::new(old_http.ip(), crate::harness::free_port());
    let text = gw.config_with_access("");
    let moved = text.replace(
        &format!("http = \"{old_http}\""),
        &format!("http = \"{new_http}\""),
    );

    // A port someone else holds: the reload is refused and the old listener keeps serving.
    let squatter = std::net::TcpListener::bind(new_http).unwrap();
    gw.write_config(&moved);
    let (_, ready) = gw.reload().await;
    let status = field(&ready, "STATUS").unwrap_or_default().to_string();
    assert!(
        status.contains("refused") && status.contains(&new_http.to_string()),
        "{status}"
    );
    let redirect = redirect_status(old_http).await;
    assert_eq!(redirect, Some(StatusCode::MOVED_PERMANENTLY));
    drop(squatter);

    // Free now: the reload binds the new address and closes the old one.
    let (_, ready) = gw.reload().await;
    assert!(!field(&ready, "STATUS")
        .unwrap_or_default()
        .contains("refused"));
    assert_eq!(
        redirect_status(new_http).await,
        Some(StatusCode::MOVED_PERMANENTLY)
    );
    assert_eq!(
        redirect_status(old_http).await,
        None,
        "the old address still answers"
    );
}

/// The status of `GET /` on a plain HTTP listener, None when nothing accepts there.
async fn redirect_status(addr: std::net::SocketAddr) -> Option<StatusCode> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    crate::harness::plain_get(stream, "/")
        .await
        .ok()
        .map(|(code, _)| code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_certificate_for_new_handshakes_and_keeps_open_connections() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr, "", None).await;
    let client = gw.client(OFFICE);
    assert_eq!(client.peer_certificate().await, gw.leaf.der);
    let mut open = client.connect().await.unwrap();

    let renewed = gw.pki.leaf(2032);
    install_leaf(gw.dir.path(), &renewed);
    gw.reload().await;

    assert_eq!(client.peer_certificate().await, renewed.der);
    // The connection made with the old certificate carries on.
    assert_eq!(get(&mut open, "/").await.unwrap().0, StatusCode::OK);
    let text = gw.scrape().await;
    let expiry = sample(
        &text,
        &format!(
            r#"edge_gateway_certificate_expiry_timestamp_seconds{{name="{}"}}"#,
            "localhost"
        ),
    );
    assert_eq!(expiry, Some(renewed.not_after as f64), "{text}");

    // A key that does not match the certificate: refused, the renewed pair stays.
    let stray = gw.pki.leaf(2033);
    std::fs::write(gw.dir.path().join("key.pem"), &stray.key_pem).unwrap();
    let (_, ready) = gw.reload().await;
    assert!(field(&ready, "STATUS")
        .unwrap_or_default()
        .contains("refused"));
    assert_eq!(client.peer_certificate().await, renewed.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_a_replaced_file_is_reloaded_without_a_signal() {
    let upstream = Upstream::start().await;
    let access = r#"allow = ["127.0.0.0/8"]"#;
    let gw = Gateway::start_with(upstream.addr, access, None, &["--watch"]).await;
    let client = gw.client(OFFICE);
    let mut open = client.connect().await.unwrap();
    assert_eq!(get(&mut open, "/").await.unwrap().0, StatusCode::OK);

    // Another file in the directory changing is no reason to reload.
    std::fs::write(gw.dir.path().join("unrelated.txt"), "x").unwrap();
    // The file replaced by a rename, as editors and tools do: reloaded with no SIGHUP.
    gw.write_config(&gw.config_with_access(r#"allow = ["127.0.0.2/32"]"#));
    let (reloading, skipped) = gw.notify.until("RELOADING=1").await;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(field(&reloading, "MONOTONIC_USEC").is_some());
    let (ready, _) = gw.notify.until("READY=1").await;
    assert!(
        !field(&ready, "STATUS")
            .unwrap_or_default()
            .contains("refused"),
        "{ready}"
    );
    assert_eq!(get(&mut open, "/").await.unwrap().0, StatusCode::FORBIDDEN);

    // A broken file written in place: refused, the last good one stays.
    std::fs::write(&gw.config, "[access\n").unwrap();
    gw.notify.until("RELOADING=1").await;
    let (ready, _) = gw.notify.until("READY=1").await;
    assert!(
        field(&ready, "STATUS")
            .unwrap_or_default()
            .contains("refused"),
        "{ready}"
    );
    let other = gw.client(OTHER).get_once("/").await.unwrap().0;
    assert_eq!(other, StatusCode::OK);
    // One settled change, one reload each time: two in all.
    let text = gw.scrape().await;
    let success = sample(
        &text,
        r#"edge_gateway_config_reloads_total{result="success"}"#,
    );
    let failure = sample(
        &text,
        r#"edge_gateway_config_reloads_total{result="failure"}"#,
    );
    assert_eq!((success, failure), (Some(1.0), Some(1.0)), "{text}");
}
