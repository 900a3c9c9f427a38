//! Operating edge-gateway: the systemd notify protocol, hot reload under load, refused
//! configurations, the metrics listener, and draining on SIGTERM; all against the real
//! binary, a real upstream and real TLS on loopback.

mod harness;

mod drain;
mod metrics;
mod notify;
mod reload;
