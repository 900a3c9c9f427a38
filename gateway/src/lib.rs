//! edge-gateway: the TLS-terminating, CIDR-filtering reverse proxy in front of the Flask app.
//!
//! # Modules, one concern each
//!
//! - [`config`]: the TOML file and `EDGE_GATEWAY__*` environment, validated into [`Settings`].
//! - [`access`]: allow/deny/trusted-proxy ranges in a prefix trie; the client behind a proxy.
//! - [`redirect`]: the host a request names and the HTTPS `Location` for it.
//! - [`tls`]: PEM loading, the swappable SNI certificate resolver, the rustls configuration.
//! - [`proxy`]: the pooled upstream client, header rewriting, upgrades, error kinds.
//! - [`server`]: listeners, accept loops, the connection limit, the graceful drain.
//! - [`request`]: a connection's and a request's life, top to bottom.
//! - [`state`]: the live, swappable [`Snapshot`] each request reads.
//! - [`observe`]: logging, and the single accounting point of each request.
//! - [`metrics`]: the Prometheus families, fed by the accounting point; the `/metrics`
//!   listener.
//! - [`reload`]: SIGHUP rereads the file and swaps the new state in whole, or changes nothing.
//! - [`systemd`]: the notify protocol (`READY=1`, `RELOADING=1`, `STOPPING=1`, watchdog).
//! - [`watch`]: `run --watch`, a reload on each settled change of the configuration file.
//!
//! # Seams for the parts built on this core
//!
//! - **Hot reload**: re-run [`Settings::load`] on the file (it only validates, so a failed
//!   reload leaves the server as it was), then `server.live().store(Arc::new(
//!   Snapshot::reload(&settings, https_port, &server.live().load())))`. Access rules, upstream,
//!   limits, timeouts, redirect and HSTS apply from the next request on, keep-alive
//!   connections included. Certificates: load with [`tls::load_certified_key`] and call
//!   [`tls::CertResolver::set_default`] or [`tls::CertResolver::install`].
//! - **ACME**: implement [`ChallengeResponder`] over the challenge store and pass it in
//!   [`Hooks::challenges`]; install issued certificates with [`tls::CertResolver::install`]
//!   ([`tls::certified_key`] pairs in-memory PEM/DER with a mismatch check). The `[acme]`
//!   table is kept unparsed in [`Settings::acme`] for that module to validate.
//! - **Metrics**: implement [`observe::RequestObserver`] and pass it in [`Hooks::observer`];
//!   it is called once per request with the listener, status, decision, upstream error kind,
//!   durations and bytes. `listen.metrics` is parsed into [`config::Listen::metrics`] and left
//!   for that module to bind.
//! - **systemd**: [`server::Server::run`] runs until a `CancellationToken` is cancelled and
//!   returns once drained; notify `READY=1` after [`server::Server::bind`] succeeds and
//!   `STOPPING=1` when cancelling.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod acme;
pub mod config;
pub mod metrics;
pub mod observe;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod request;
pub mod server;
pub mod state;
pub mod systemd;
pub mod tls;
pub mod watch;

use std::sync::Arc;

use bytes::Bytes;

pub use config::Settings;
pub use server::Server;
pub use state::Snapshot;

/// Answers ACME HTTP-01 challenges on the HTTP listener.
///
/// Called for every request whose path starts with `/.well-known/acme-challenge/`, before
/// the access rules and the redirect, with the rest of the path as `token` (already checked
/// to be base64url). Some(body) is answered 200 with that body; None is answered 404. It runs
/// on the request path: it must not block.
pub trait ChallengeResponder: Send + Sync + 'static {
    /// The key authorization for `token`, if a challenge with that token is pending.
    fn respond(&self, token: &str) -> Option<Bytes>;
}

/// The default responder: no challenge is ever pending (every token is 404).
#[derive(Debug, Default)]
pub struct NoChallenges;

impl ChallengeResponder for NoChallenges {
    fn respond(&self, _token: &str) -> Option<Bytes> {
        None
    }
}

/// What other parts of the program plug into the server.
#[derive(Clone)]
pub struct Hooks {
    /// ACME HTTP-01 answers.
    pub challenges: Arc<dyn ChallengeResponder>,
    /// Per-request accounting (metrics).
    pub observer: Arc<dyn observe::RequestObserver>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            challenges: Arc::new(NoChallenges),
            observer: Arc::new(observe::NoObserver),
        }
    }
}
