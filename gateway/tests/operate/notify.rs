//! The notify protocol as a service manager sees it, read from the socket the test binds.

use std::net::Ipv4Addr;

use http::StatusCode;

use crate::harness::{field, Gateway, Upstream};

/// The kind of a notify datagram: the state line it carries, or STATUS for a status alone.
fn kind(msg: &str) -> &'static str {
    for (line, kind) in [
        ("READY=1", "READY"),
        ("RELOADING=1", "RELOADING"),
        ("STOPPING=1", "STOPPING"),
        ("WATCHDOG=1", "WATCHDOG"),
    ] {
        if msg.lines().any(|l| l == line) {
            return kind;
        }
    }
    "STATUS"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_stopping_in_order_with_watchdog_pings() {
    let upstream = Upstream::start().await;
    // 300 ms: the daemon must ping every 150 ms.
    let mut gw = Gateway::start(upstream.addr, r#"allow = ["127.0.0.0/8"]"#, Some(300_000)).await;

    // Start-up: READY=1 is the one state message, and it comes with a status line.
    let kinds: Vec<_> = gw.startup.iter().map(|m| kind(m)).collect();
    assert_eq!(kinds.last(), Some(&"READY"), "{:?}", gw.startup);
    assert!(
        !kinds.contains(&"RELOADING") && !kinds.contains(&"STOPPING"),
        "{kinds:?}"
    );
    let ready = gw.startup.last().unwrap();
    let status = field(ready, "STATUS").expect("READY=1 carries a STATUS= line");
    assert!(
        status.contains(&gw.ports.https.to_string()),
        "status: {status}"
    );

    // READY=1 means serving: the very first request after it succeeds.
    let client = gw.client(Ipv4Addr::LOCALHOST);
    let (code, _) = client.get_once("/").await.unwrap();
    assert_eq!(code, StatusCode::OK);

    // The watchdog: three pings in a row once nothing else is happening.
    for _ in 0..3 {
        let msg = gw.notify.next().await;
        assert_eq!(msg, "WATCHDOG=1\n");
    }

    // A reload: RELOADING=1 with MONOTONIC_USEC=, then READY=1 with a status, twice, the
    // clock moving forward.
    let mut clocks = Vec::new();
    for _ in 0..2 {
        let (reloading, ready) = gw.reload().await;
        let usec: u64 = field(&reloading, "MONOTONIC_USEC")
            .expect("RELOADING=1 carries MONOTONIC_USEC=")
            .parse()
            .unwrap();
        clocks.push(usec);
        assert!(field(&ready, "STATUS").is_some(), "{ready:?}");
    }
    assert!(clocks[0] > 0 && clocks[1] > clocks[0], "{clocks:?}");

    // Shutdown: STOPPING=1, then a clean exit.
    gw.signal("TERM");
    let (stopping, skipped) = gw.notify.until("STOPPING=1").await;
    assert!(skipped.iter().all(|m| kind(m) == "STATUS"), "{skipped:?}");
    assert!(field(&stopping, "STATUS").is_some());
    let exit = gw.wait_exit().await;
    assert!(exit.success(), "{exit:?}; log:\n{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watchdog_pings_without_watchdog_usec() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr, "", None).await;
    // A watchdog would have pinged several times in this window (the shortest WatchdogSec
    // is 1 s, so pings at 500 ms at most); nothing at all arrives.
    let quiet = gw
        .notify
        .next_within(std::time::Duration::from_millis(1500))
        .await;
    assert_eq!(quiet, None);
}
