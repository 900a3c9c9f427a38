//! Listeners, accept loops, the connection limit and the graceful drain.
//!
//! [`Server::bind`] binds both listeners (an IPv6 wildcard such as `[::]:443` is dual-stack:
//! IPv4 clients arrive as IPv4-mapped addresses and are matched as IPv4). [`Server::run`]
//! accepts until its [`CancellationToken`] is cancelled, then closes the listeners, asks every
//! connection to finish the request it is serving and close, and waits up to
//! `timeouts.shutdown_grace` before returning. Whoever owns the process (signal handling,
//! systemd notify) cancels the token and waits for `run` to return.
//!
//! The listening sockets can be replaced while running ([`Listeners::replace`], for a reload
//! that changed an address): the accept loop switches to the new socket and the old one is
//! closed; connections accepted on it carry on.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::access::canonical;
use crate::config::Settings;
use crate::observe::{Accounting, Listener};
use crate::request::{self, RequestIds, Shared};
use crate::state::{Live, Snapshot};
use crate::tls::{self, CertResolver, TlsError};
use crate::Hooks;

/// A server that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        /// `listen.http` or `listen.https`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound, not yet running, gateway.
pub struct Server {
    listeners: Listeners,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
}

/// The listening sockets the accept loops use, replaceable while the server runs. Both
/// become None when the server drains, which closes them.
#[derive(Clone)]
pub struct Listeners {
    http: Arc<watch::Sender<Option<Arc<TcpListener>>>>,
    https: Arc<watch::Sender<Option<Arc<TcpListener>>>>,
}

impl Listeners {
    fn new(http: TcpListener, https: TcpListener) -> Listeners {
        let slot = |l| Arc::new(watch::Sender::new(Some(Arc::new(l))));
        Listeners {
            http: slot(http),
            https: slot(https),
        }
    }

    fn sender(&self, kind: Listener) -> &watch::Sender<Option<Arc<TcpListener>>> {
        match kind {
            Listener::Http => &self.http,
            Listener::Https => &self.https,
        }
    }

    /// Makes `listener` the one `kind` accepts on, from the next accept on; the socket it
    /// replaces is closed (connections accepted on it carry on). Ignored once draining.
    pub fn replace(&self, kind: Listener, listener: TcpListener) {
        self.sender(kind).send_if_modified(|slot| {
            if slot.is_some() {
                *slot = Some(Arc::new(listener));
                true
            } else {
                false
            }
        });
    }

    fn close(&self) {
        self.http.send_replace(None);
        self.https.send_replace(None);
    }
}

impl Server {
    /// Binds `listen.http` and `listen.https` and builds the live state from `settings`.
    pub async fn bind(
        settings: &Settings,
        certs: Arc<CertResolver>,
        hooks: Hooks,
    ) -> Result<Server, ServerError> {
        let (http, http_addr) = listen("listen.http", settings.listen.http)?;
        let (https, https_addr) = listen("listen.https", settings.listen.https)?;
        let listeners = Listeners::new(http, https);
        let acceptor = TlsAcceptor::from(tls::server_config(certs)?);
        let snapshot = Snapshot::new(settings, https_addr.port());
        let shared = Arc::new(Shared {
            live: Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)),
            acceptor,
            challenges: hooks.challenges,
            accounting: Accounting {
                access_log: settings.log.access,
                observer: hooks.observer,
            },
            ids: RequestIds::new(),
        });
        Ok(Server {
            listeners,
            http_addr,
            https_addr,
            shared,
            limit: Arc::new(Semaphore::new(settings.limits.max_connections)),
        })
    }

    /// The bound HTTP address (the real port when 0 was configured).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The live state: `store()` a new [`Snapshot`] here to reconfigure without a restart.
    pub fn live(&self) -> Live {
        self.shared.live.clone()
    }

    /// The listening sockets, for a reload that rebinds one.
    pub fn listeners(&self) -> Listeners {
        self.listeners.clone()
    }

    /// Accepts connections until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) {
        let Server {
            listeners,
            http_addr,
            https_addr,
            shared,
            limit,
        } = self;
        tracing::info!(listener = "http", listener.addr = %http_addr, "Listening");
        tracing::info!(listener = "https", listener.addr = %https_addr, "Listening");
        let graceful = GracefulShutdown::new();
        let http = listeners.sender(Listener::Http).subscribe();
        let https = listeners.sender(Listener::Https).subscribe();
        tokio::join!(
            accept_loop(http, Listener::Http, &shared, &limit, &graceful, &shutdown),
            accept_loop(
                https,
                Listener::Https,
                &shared,
                &limit,
                &graceful,
                &shutdown
            ),
        );
        // Closing the listeners first makes new connections fail fast during the drain.
        listeners.close();
        let grace = shared.live.load().timeouts.shutdown_grace;
        let open = graceful.count();
        tracing::info!(
            connections = open,
            grace_ms = grace.as_millis() as u64,
            "Draining"
        );
        match tokio::time::timeout(grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("Drained"),
            Err(_) => tracing::warn!("Grace period over; closing the remaining connections"),
        }
    }
}

async fn accept_loop(
    mut listener: watch::Receiver<Option<Arc<TcpListener>>>,
    kind: Listener,
    shared: &Arc<Shared>,
    limit: &Arc<Semaphore>,
    graceful: &GracefulShutdown,
    shutdown: &CancellationToken,
) {
    loop {
        // At the limit, stop accepting: new clients wait in the kernel's backlog.
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let Some(current) = listener.borrow_and_update().clone() else {
            return;
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            // A reload replaced the socket: accept on the new one from now on.
            _ = listener.changed() => continue,
            r = current.accept() => match r {
                Ok(pair) => pair,
                Err(error) => {
                    accept_error(&error).await;
                    continue;
                }
            },
        };
        // Small responses must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!(
            "conn",
            listener = kind.as_str(),
            client.addr = %canonical(peer.ip()),
            client.port = peer.port(),
        );
        let task = request::connection(
            shared.clone(),
            stream,
            peer,
            kind,
            graceful.watcher(),
            shutdown.clone(),
            permit,
        );
        tokio::spawn(task.instrument(span));
    }
}

async fn accept_error(error: &io::Error) {
    // Out of file descriptors: back off instead of spinning; the rest are per-connection.
    // 23 is ENFILE and 24 EMFILE on Linux.
    if matches!(error.raw_os_error(), Some(23 | 24)) {
        tracing::warn!(%error, "Cannot accept: out of file descriptors");
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        tracing::debug!(%error, "Accept failed");
    }
}

/// Binds `addr` the way the server's listeners are bound (dual-stack for `[::]`,
/// SO_REUSEADDR, a backlog of 1024); `key` names the setting in the error.
pub fn listen(
    key: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), ServerError> {
    let err = |source| ServerError::Bind { key, addr, source };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(err)?;
    if addr.is_ipv6() {
        // Dual-stack regardless of net.ipv6.bindv6only, so "[::]" serves IPv4 clients too.
        socket.set_only_v6(false).map_err(err)?;
    }
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    let listener = TcpListener::from_std(socket.into()).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}
