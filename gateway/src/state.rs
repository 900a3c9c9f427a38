//! The live configuration: what a request reads, swappable at run time.
//!
//! A [`Snapshot`] is immutable. The server holds the current one in a [`Live`] (an
//! `ArcSwap`), and every request loads it once, without a lock, when it arrives. A reload
//! validates the new file with [`crate::config::Settings::load`], builds a new snapshot with
//! [`Snapshot::reload`] and `store()`s it: the next request uses it, including the next
//! request on a keep-alive connection opened before. Requests already running finish with the
//! snapshot they started with.
//!
//! What a snapshot does not change: the listening addresses (sockets stay bound), and
//! `limits.max_connections` (the connection semaphore is sized at start). Connection-level
//! settings (`timeouts.header_read`, `limits.max_header_bytes` as hyper's buffer) apply to
//! connections accepted after the swap.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::access::AccessRules;
use crate::config::{Limits, Settings, Timeouts};
use crate::proxy::Upstream;
use crate::redirect::Redirect;

/// The swappable handle to the current snapshot.
pub type Live = Arc<ArcSwap<Snapshot>>;

/// Everything a request needs that a reload may change.
pub struct Snapshot {
    /// Allow, deny, trusted proxies.
    pub access: AccessRules,
    /// The upstream and its connection pool.
    pub upstream: Upstream,
    /// The HTTP to HTTPS redirect.
    pub redirect: Redirect,
    /// The `Strict-Transport-Security` value, None when `hsts.max_age` is 0.
    pub hsts: Option<HeaderValue>,
    /// `[limits]`.
    pub limits: Limits,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `log.access`.
    pub access_log: bool,
    /// The connection builder (HTTP/1.1 and HTTP/2), used for connections accepted while this
    /// snapshot is current.
    pub http: auto::Builder<TokioExecutor>,
}

impl Snapshot {
    /// Builds a snapshot; `https_port` is the bound HTTPS port (for redirects when
    /// `redirect.https_port` is unset).
    pub fn new(settings: &Settings, https_port: u16) -> Snapshot {
        Self::build(settings, https_port, Upstream::new(settings))
    }

    /// As [`Snapshot::new`], but keeps `previous`'s upstream pool when the upstream settings
    /// did not change, so a reload does not drop idle upstream connections.
    pub fn reload(settings: &Settings, https_port: u16, previous: &Snapshot) -> Snapshot {
        let upstream = if previous.upstream.same_as(settings) {
            previous.upstream.clone()
        } else {
            Upstream::new(settings)
        };
        Self::build(settings, https_port, upstream)
    }

    fn build(settings: &Settings, https_port: u16, upstream: Upstream) -> Snapshot {
        let hsts = (settings.hsts.max_age > 0).then(|| {
            let mut v = format!("max-age={}", settings.hsts.max_age);
            if settings.hsts.include_subdomains {
                v.push_str("; includeSubDomains");
            }
            HeaderValue::from_str(&v).expect("digits and ASCII are a valid header value")
        });
        Snapshot {
            access: AccessRules::new(&settings.access),
            upstream,
            redirect: Redirect::new(&settings.redirect, https_port),
            hsts,
            limits: settings.limits.clone(),
            timeouts: settings.timeouts.clone(),
            access_log: settings.log.access,
            http: connection_builder(settings),
        }
    }
}

fn connection_builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own limit is a backstop only: the request path checks max_header_bytes itself
    // and answers 431 with an access line. hyper refuses a buffer under 8 KiB.
    let head_buffer = (settings.limits.max_header_bytes * 2).max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.timeouts.header_read)
        .max_buf_size(head_buffer);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(head_buffer).unwrap_or(u32::MAX));
    builder
}
