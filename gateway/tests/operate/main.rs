//! Operating edge-gateway: the systemd notify protocol, hot reload under load, refused
//! configurations, the metrics listener, and draining on SIGTERM; all against the real
//! binary, a real upstream and real TLS on loopback.

// The helpers every integration test shares (the test CA, free ports, the binary's path).
#[path = "../common/mod.rs"]
mod common;
mod harness;

mod drain;
mod metrics;
mod notify;
mod reload;
