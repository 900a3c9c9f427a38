//! SIGTERM drains: a request in flight finishes, nothing new is accepted, the exit is clean.

use std::net::Ipv4Addr;

use http::StatusCode;

use crate::harness::{get, Gateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigterm_finishes_and_the_exit_is_clean() {
    let mut upstream = Upstream::start().await;
    let mut gw = Gateway::start(upstream.addr, "", None).await;
    let client = gw.client(Ipv4Addr::LOCALHOST);
    let mut sender = client.connect().await.unwrap();
    let in_flight = tokio::spawn(async move { get(&mut sender, "/slow").await });

    // The upstream has the request (it answers a second later); now stop the gateway.
    upstream.slow_started.recv().await.unwrap();
    gw.signal("TERM");
    gw.notify.until("STOPPING=1").await;

    // New connections are not accepted once STOPPING=1 is said.
    assert!(
        client.connect().await.is_err(),
        "a new connection was accepted while draining"
    );

    let (code, body) = in_flight
        .await
        .unwrap()
        .expect("the request in flight failed");
    assert_eq!(code, StatusCode::OK);
    assert_eq!(&body[..], b"slow ok");
    let exit = gw.wait_exit().await;
    assert!(exit.success(), "{exit:?}; log:\n{}", gw.log());
}
