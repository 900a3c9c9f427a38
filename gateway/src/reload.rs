//! Hot reload: SIGHUP (or, with `run --watch`, a change of the file: [`crate::watch`])
//! rereads the configuration file and swaps the new state in whole, or changes nothing.
//!
//! A reload runs in steps, and only the last one changes anything:
//!
//! 1. say `RELOADING=1` to the service manager;
//! 2. read and validate the file ([`Settings::load`]), load and check the certificate and key
//!    it names, and bind every listener whose address changed;
//! 3. if any of that failed: log each problem with its key and reason, count a failure, and
//!    say so in `STATUS=`; the sockets bound in step 2 are closed again, and the old
//!    configuration stays in force;
//! 4. otherwise: store the new [`Snapshot`] (the next request reads it, also on connections
//!    already open), install the certificate, hand the new sockets to the accept loops (the
//!    old ones close; connections accepted on them carry on), and count a success;
//! 5. say `READY=1` with a status line.
//!
//! Reloads are serialised: one task owns the [`Reloader`] and runs them one after another,
//! so two signals in quick succession give two complete reloads, never a mix.
//!
//! What a reload cannot change, and says so in a warning: `limits.max_connections` (the
//! connection semaphore is sized at start) and `[log]` format and level (the subscriber is
//! global). Both take effect at the next restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Settings};
use crate::metrics::{self, Metrics, Outcome};
use crate::observe::Listener;
use crate::server::{self, Listeners, ServerError};
use crate::state::{Live, Snapshot};
use crate::systemd::{one_line, Notifier};
use crate::tls::{self, CertResolver, TlsError};

/// Why a reload was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, parsed or validated (boxed: it carries every problem).
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// The certificate or key it names cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener whose address changed cannot be bound there.
    #[error(transparent)]
    Bind(#[from] ServerError),
}

impl From<ConfigError> for ReloadError {
    fn from(e: ConfigError) -> ReloadError {
        ReloadError::Config(Box::new(e))
    }
}

impl ReloadError {
    /// Each problem as (key, reason), for the log: every invalid value of the file, or the
    /// one certificate, key or listener that failed.
    pub fn problems(&self) -> Vec<(String, String)> {
        match self {
            ReloadError::Config(e) => match e.as_ref() {
                ConfigError::Invalid { problems, .. } => problems
                    .iter()
                    .map(|p| (p.key.clone(), p.message.clone()))
                    .collect(),
                // Syntax and type errors: the config crate's message names the key or line.
                e @ ConfigError::Read { .. } => vec![("-".to_string(), e.to_string())],
            },
            ReloadError::Tls(e) => vec![(tls_key(e).to_string(), e.to_string())],
            ReloadError::Bind(e @ ServerError::Bind { key, .. }) => {
                vec![(key.to_string(), e.to_string())]
            }
            ReloadError::Bind(e) => vec![("-".to_string(), e.to_string())],
        }
    }
}

/// The `[tls]` key a certificate problem is about.
fn tls_key(e: &TlsError) -> &'static str {
    match e {
        TlsError::Read { key, .. } => key,
        TlsError::NoCertificate { .. } | TlsError::BadCertificate { .. } => "tls.cert",
        TlsError::NoKey { .. } | TlsError::BadKey { .. } | TlsError::KeyMismatch { .. } => {
            "tls.key"
        }
        TlsError::Config(_) => "tls",
    }
}

/// What a certificate says about itself, for the expiry metric and the status line.
#[derive(Debug, Clone)]
pub struct CertificateFacts {
    /// Its DNS names (subject alternative names), or its common name when it has none.
    pub names: Vec<String>,
    /// notAfter.
    pub not_after: SystemTime,
}

impl CertificateFacts {
    /// Reads the leaf of `key`'s chain; None when it does not parse (rustls accepted it,
    /// so this is only a certificate with extensions the parser does not know).
    pub fn of(key: &CertifiedKey) -> Option<CertificateFacts> {
        let der = key.end_entity_cert().ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let not_after = u64::try_from(cert.validity().not_after.timestamp())
            .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut names: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            Some(d.to_ascii_lowercase())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            if let Some(cn) = cert.subject().iter_common_name().next() {
                names.extend(cn.as_str().ok().map(str::to_ascii_lowercase));
            }
        }
        Some(CertificateFacts { names, not_after })
    }

    /// Sets the expiry series of each name and drops those of names no longer served.
    pub fn export(&self, metrics: &Metrics) {
        for name in &self.names {
            metrics.certificate_expiry(name, self.not_after);
        }
        metrics.retain_certificates(self.names.iter().map(String::as_str));
    }
}

/// The metrics listener's task: where it is bound and how to stop it.
struct MetricsListener {
    addr: SocketAddr,
    stop: CancellationToken,
}

/// Binds `listen.metrics` and serves scrapes on it until `stop` (a child of the shutdown
/// token) is cancelled.
pub fn start_metrics_listener(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<(SocketAddr, CancellationToken), ServerError> {
    let (listener, bound) = server::listen("listen.metrics", addr)?;
    Ok((bound, spawn_metrics(listener, metrics, shutdown)))
}

fn spawn_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) -> CancellationToken {
    let stop = shutdown.child_token();
    tokio::spawn(metrics::serve(
        listener,
        metrics,
        stop.clone().cancelled_owned(),
    ));
    stop
}

/// Everything a reload touches, owned by the one task that runs reloads.
pub struct Reloader {
    path: PathBuf,
    live: Live,
    certs: Arc<CertResolver>,
    listeners: Listeners,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    shutdown: CancellationToken,
    /// The settings in force.
    current: Settings,
    /// Where the public listeners are bound now.
    http: SocketAddr,
    https: SocketAddr,
    metrics_listener: Option<MetricsListener>,
}

/// What is needed to build a [`Reloader`]: the running server's handles.
pub struct Parts {
    /// The configuration file to reread.
    pub path: PathBuf,
    /// The settings the server was started with.
    pub settings: Settings,
    /// The live snapshot.
    pub live: Live,
    /// The certificate resolver the TLS listener uses.
    pub certs: Arc<CertResolver>,
    /// The server's listening sockets.
    pub listeners: Listeners,
    /// Bound HTTP address.
    pub http: SocketAddr,
    /// Bound HTTPS address.
    pub https: SocketAddr,
    /// The metrics listener, when `listen.metrics` is set: its address and its stop token.
    pub metrics_listener: Option<(SocketAddr, CancellationToken)>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The service manager's ear.
    pub notifier: Notifier,
    /// The process's shutdown token (the metrics listener's task is its child).
    pub shutdown: CancellationToken,
}

/// A reload that went through: what is now in force, for the status line.
struct Applied {
    facts: Option<CertificateFacts>,
    rebound: Vec<&'static str>,
}

/// The new state, prepared but not yet in force.
struct Prepared {
    settings: Settings,
    /// None under `[acme]`, whose manager installs its own certificates.
    key: Option<Arc<CertifiedKey>>,
    http: Option<(TcpListener, SocketAddr)>,
    https: Option<(TcpListener, SocketAddr)>,
    metrics: Option<Option<(TcpListener, SocketAddr)>>,
}

impl Reloader {
    /// A reloader for the running server described by `parts`.
    pub fn new(parts: Parts) -> Reloader {
        Reloader {
            path: parts.path,
            live: parts.live,
            certs: parts.certs,
            listeners: parts.listeners,
            metrics: parts.metrics,
            notifier: parts.notifier,
            shutdown: parts.shutdown,
            current: parts.settings,
            http: parts.http,
            https: parts.https,
            metrics_listener: parts
                .metrics_listener
                .map(|(addr, stop)| MetricsListener { addr, stop }),
        }
    }

    /// Reloads on every SIGHUP, and on every settled change of the file when `changes` is
    /// given ([`crate::watch`]), until shutdown.
    pub async fn run(
        mut self,
        mut hangups: tokio::signal::unix::Signal,
        mut changes: Option<tokio::sync::mpsc::Receiver<()>>,
    ) {
        loop {
            let changed = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!(signal = "SIGHUP", "Reloading the configuration");
                }
                got = changed => {
                    if got.is_none() {
                        // The watch ended; SIGHUP still works.
                        changes = None;
                        continue;
                    }
                    tracing::info!(config.file = %self.path.display(), "File changed; reloading");
                }
            }
            self.reload().await;
        }
    }

    /// One complete reload, told to the service manager and counted in the metrics.
    pub async fn reload(&mut self) {
        let started = Instant::now();
        self.notifier
            .reloading(&format!("Reloading {}", self.path.display()));
        let outcome = match self.prepare().await {
            Ok(prepared) => {
                let applied = self.apply(prepared);
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::info!(
                    config.file = %self.path.display(),
                    elapsed_ms,
                    allow = self.current.access.allow.len(),
                    deny = self.current.access.deny.len(),
                    rebound = ?applied.rebound,
                    "Configuration reloaded"
                );
                self.metrics.reload(Outcome::Success);
                self.notifier.ready(&status_line(
                    &self.current,
                    self.https,
                    self.http,
                    applied.facts.as_ref(),
                    "reloaded",
                ));
                Outcome::Success
            }
            Err(error) => {
                for (key, reason) in error.problems() {
                    tracing::warn!(
                        config.file = %self.path.display(),
                        config.key = %key,
                        reason = %reason,
                        "Reload refused; the previous configuration stays in force"
                    );
                }
                self.metrics.reload(Outcome::Failure);
                self.notifier.ready(&one_line(&format!(
                    "Reload refused, previous configuration in force: {error}"
                )));
                Outcome::Failure
            }
        };
        tracing::debug!(result = outcome.as_str(), "Reload finished");
    }

    /// Steps that can fail; nothing in force is touched.
    async fn prepare(&self) -> Result<Prepared, ReloadError> {
        let path = self.path.clone();
        // Reading and validating a large allowlist is CPU work: keep it off the runtime
        // threads that serve requests.
        let (settings, key) = tokio::task::spawn_blocking(move || {
            let settings = Settings::load(&path)?;
            let key = match &settings.tls {
                Some(files) => Some(Arc::new(tls::load_certified_key(&files.cert, &files.key)?)),
                None => None,
            };
            Ok::<_, ReloadError>((settings, key))
        })
        .await
        .expect("the reload's blocking task does not panic")?;

        let rebind = |key, old: SocketAddr, new: SocketAddr| {
            (old != new).then(|| server::listen(key, new)).transpose()
        };
        let http = rebind("listen.http", self.http, settings.listen.http)?;
        let https = rebind("listen.https", self.https, settings.listen.https)?;
        let metrics = match (&self.metrics_listener, settings.listen.metrics) {
            (Some(m), Some(new)) if m.addr == new => None,
            (None, None) => None,
            (_, Some(new)) => Some(Some(server::listen("listen.metrics", new)?)),
            (Some(_), None) => Some(None),
        };
        Ok(Prepared {
            settings,
            key,
            http,
            https,
            metrics,
        })
    }

    /// Puts a prepared state in force; cannot fail.
    fn apply(&mut self, prepared: Prepared) -> Applied {
        let Prepared {
            settings,
            key,
            http,
            https,
            metrics,
        } = prepared;
        let mut rebound = Vec::new();
        if let Some((listener, addr)) = http {
            self.listeners.replace(Listener::Http, listener);
            tracing::info!(listener = "http", listener.addr = %addr, "Listening");
            self.http = addr;
            rebound.push("listen.http");
        }
        if let Some((listener, addr)) = https {
            self.listeners.replace(Listener::Https, listener);
            tracing::info!(listener = "https", listener.addr = %addr, "Listening");
            self.https = addr;
            rebound.push("listen.https");
        }
        if let Some(new) = metrics {
            if let Some(old) = self.metrics_listener.take() {
                old.stop.cancel();
            }
            self.metrics_listener = new.map(|(listener, addr)| MetricsListener {
                addr,
                stop: spawn_metrics(listener, Arc::clone(&self.metrics), &self.shutdown),
            });
            rebound.push("listen.metrics");
        }

        let facts = key.as_ref().and_then(|key| CertificateFacts::of(key));
        if let Some(key) = key {
            self.certs.set_default(Some(key));
        }
        if let Some(f) = &facts {
            f.export(&self.metrics);
        }
        if settings.acme != self.current.acme {
            tracing::warn!(
                config.key = "acme",
                "Changed; takes effect at the next restart"
            );
        }
        let snapshot = Snapshot::reload(&settings, self.https.port(), &self.live.load());
        self.live.store(Arc::new(snapshot));

        for w in &settings.warnings {
            tracing::warn!(config.key = %w.key, "{}", w.message);
        }
        if settings.limits.max_connections != self.current.limits.max_connections {
            tracing::warn!(
                config.key = "limits.max_connections",
                "Changed; takes effect at the next restart"
            );
        }
        if settings.log.format != self.current.log.format
            || settings.log.level != self.current.log.level
        {
            tracing::warn!(
                config.key = "log",
                "Changed; takes effect at the next restart"
            );
        }
        self.current = settings;
        Applied { facts, rebound }
    }
}

/// The `STATUS=` line after start or a reload: what is served, in a line a person reads in
/// `systemctl status`.
pub fn status_line(
    settings: &Settings,
    https: SocketAddr,
    http: SocketAddr,
    facts: Option<&CertificateFacts>,
    what: &str,
) -> String {
    let cert = match facts {
        Some(f) => {
            let days = f
                .not_after
                .duration_since(SystemTime::now())
                .map(|d| d.as_secs() / 86_400)
                .unwrap_or(0);
            format!("certificate {} ({days} days left)", f.names.join(","))
        }
        None => "certificate loaded".to_string(),
    };
    let allow = match settings.access.allow.len() {
        0 => "all addresses allowed".to_string(),
        n => format!("{n} allow ranges"),
    };
    one_line(&format!(
        "Serving https on {https}, http on {http}; {allow}, {} deny ranges; {cert}; \
         configuration {what}",
        settings.access.deny.len()
    ))
}
