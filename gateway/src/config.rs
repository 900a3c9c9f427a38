//! The configuration: a TOML file plus environment overrides, validated into [`Settings`].
//!
//! # Sources
//!
//! [`Settings::load`] reads the TOML file, then the environment. Every key can be overridden by
//! a variable named `EDGE_GATEWAY__` followed by the table and the key in upper case, joined
//! by `__`: `[access] allow` is `EDGE_GATEWAY__ACCESS__ALLOW`, `[listen] https` is
//! `EDGE_GATEWAY__LISTEN__HTTPS`. The three lists (`access.allow`, `access.deny`,
//! `access.trusted_proxies`) are written comma-separated in a variable
//! (`EDGE_GATEWAY__ACCESS__ALLOW=203.0.113.0/28,2001:db8::/32`); an empty variable is taken as
//! unset.
//!
//! # Validation
//!
//! The file is first read into plain serde structs (unknown keys are refused, so a misspelt
//! key is an error rather than a silently ignored line), then [`Settings::from_raw`] checks
//! every value and collects every problem, each naming its key (`access.allow[2]`) and what is
//! wrong. Validation has no side effects (it opens no file and binds no socket), so a reload
//! can run it on a new file and keep the running settings when it fails. The certificate and
//! key files named by `[tls]` are loaded and checked by [`crate::tls`].
//!
//! `[tls]` or `[acme]`: one of them is needed. With both, `[acme]` wins: the `[tls]` files are
//! ignored (a warning says so) and the certificate from the CA is served.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{StatusCode, Uri};
use ipnet::IpNet;
use serde::Deserialize;

/// The prefix of environment variables that override keys of the file.
pub const ENV_PREFIX: &str = "EDGE_GATEWAY";

/// Keys whose environment override is a comma-separated list.
const LIST_KEYS: [&str; 3] = ["access.allow", "access.deny", "access.trusted_proxies"];

/// A configuration that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("{}: {source}", path.display())]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What the `config` crate reported; it names the key for type errors.
        #[source]
        source: config::ConfigError,
    },
    /// The file parsed, but some values are wrong; each problem names its key.
    #[error("{}: {}", path.display(), Problems(problems))]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// Every problem found, in the order of the keys.
        problems: Vec<Problem>,
    },
}

/// One wrong value: the key it is under and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, with an index for list entries: `access.allow[2]`.
    pub key: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A value that was accepted but probably not meant as written (a CIDR with host bits set).
pub type Warning = Problem;

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    access: RawAccess,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    redirect: RawRedirect,
    #[serde(default)]
    hsts: RawHsts,
    #[serde(default)]
    log: RawLog,
    /// Kept as written for the ACME module, which owns its keys.
    #[serde(default)]
    acme: Option<config::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    http: Option<String>,
    https: Option<String>,
    metrics: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<String>,
    header_read: Option<String>,
    request: Option<String>,
    upstream_idle: Option<String>,
    shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<u64>,
    max_header_bytes: Option<u64>,
    max_connections: Option<u64>,
    upstream_max_idle: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    status: Option<u16>,
    status_other_methods: Option<u16>,
    https_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHsts {
    max_age: Option<u64>,
    include_subdomains: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
    access: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// The validated settings.

/// A valid configuration, every value typed and every default filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[listen]`: the addresses to bind.
    pub listen: Listen,
    /// `[tls]`: the certificate chain and key files; None when `[acme]` is set, since the ACME
    /// certificate wins (a `[tls]` beside `[acme]` is ignored with a warning).
    pub tls: Option<TlsFiles>,
    /// `[upstream]`: where requests are proxied.
    pub upstream: UpstreamSettings,
    /// `[access]`: who may connect.
    pub access: AccessSettings,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `[limits]`.
    pub limits: Limits,
    /// `[redirect]`: the HTTP to HTTPS redirect.
    pub redirect: RedirectSettings,
    /// `[hsts]`: the `Strict-Transport-Security` header.
    pub hsts: Hsts,
    /// `[log]`.
    pub log: LogSettings,
    /// `[acme]`, validated (None when absent).
    pub acme: Option<edge_gateway_acme::AcmeSettings>,
    /// Values accepted with a note (a CIDR with host bits set); `check` prints them and `run`
    /// logs them.
    pub warnings: Vec<Warning>,
}

/// `[listen]`.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Plain HTTP: redirects and ACME challenges.
    pub http: SocketAddr,
    /// HTTPS: the proxied site.
    pub https: SocketAddr,
    /// The Prometheus endpoint; bound by the metrics module, not by [`crate::server`].
    pub metrics: Option<SocketAddr>,
}

/// `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The URL as written, for logs.
    pub url: Uri,
    /// Always `http`.
    pub scheme: Scheme,
    /// Host and port connected to.
    pub authority: Authority,
}

/// `[access]`, parsed into networks (host bits cleared).
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// Empty means every address is allowed.
    pub allow: Vec<IpNet>,
    /// Wins over `allow`.
    pub deny: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// `[timeouts]`.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Opening a TCP connection to the upstream.
    pub connect: Duration,
    /// A client's TLS handshake and each request's headers.
    pub header_read: Duration,
    /// From a request's arrival to the upstream's response headers.
    pub request: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub upstream_idle: Duration,
    /// How long requests in flight may run after SIGTERM before the process exits.
    pub shutdown_grace: Duration,
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body; more is 413.
    pub max_body_bytes: u64,
    /// Largest request head (names, values and separators of all headers); more is 431.
    pub max_header_bytes: usize,
    /// Client connections held open at once, both listeners together.
    pub max_connections: usize,
    /// Idle keep-alive connections kept to the upstream.
    pub upstream_max_idle: usize,
}

/// `[redirect]`.
#[derive(Debug, Clone)]
pub struct RedirectSettings {
    /// For GET and HEAD.
    pub status: StatusCode,
    /// For every other method; 307 or 308 so that method and body are kept.
    pub status_other_methods: StatusCode,
    /// The port put in `Location`; None means the HTTPS listener's port.
    pub https_port: Option<u16>,
}

/// `[hsts]`.
#[derive(Debug, Clone)]
pub struct Hsts {
    /// Seconds; 0 sends no header.
    pub max_age: u64,
    /// Adds `includeSubDomains`.
    pub include_subdomains: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, for people.
    Human,
    /// One JSON object per line, for machines.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `edge_gateway=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
    /// Whether the access line is written for each request.
    pub access: bool,
}

/// Defaults, in one place, so the reference config and the code agree.
pub mod defaults {
    use std::time::Duration;

    /// `timeouts.connect`.
    pub const CONNECT: Duration = Duration::from_secs(5);
    /// `timeouts.header_read`.
    pub const HEADER_READ: Duration = Duration::from_secs(10);
    /// `timeouts.request`.
    pub const REQUEST: Duration = Duration::from_secs(60);
    /// `timeouts.upstream_idle`.
    pub const UPSTREAM_IDLE: Duration = Duration::from_secs(60);
    /// `timeouts.shutdown_grace`.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// `limits.max_body_bytes`: 10 MiB.
    pub const MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
    /// `limits.max_header_bytes`: 16 KiB.
    pub const MAX_HEADER_BYTES: u64 = 16 * 1024;
    /// `limits.max_connections`.
    pub const MAX_CONNECTIONS: u64 = 10_000;
    /// `limits.upstream_max_idle`.
    pub const UPSTREAM_MAX_IDLE: u64 = 256;
    /// `hsts.max_age`: one year.
    pub const HSTS_MAX_AGE: u64 = 31_536_000;
}

impl Settings {
    /// Reads `path` and the `EDGE_GATEWAY__*` environment, and validates the result.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// As [`Settings::load`], with the environment given as a map instead of the process's
    /// (None reads the process's).
    pub fn load_with_env(
        path: &Path,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Settings, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = config::File::from(path).format(config::FileFormat::Toml);
        let raw: RawConfig = config::Config::builder()
            .add_source(file)
            .add_source(environment(env))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(read)?;
        Self::from_raw(raw).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parses TOML text (no environment): for tests and tools.
    pub fn from_toml_str(text: &str) -> Result<Settings, ConfigError> {
        let path = PathBuf::from("<string>");
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
        Self::from_raw(raw).map_err(|problems| ConfigError::Invalid { path, problems })
    }

    fn from_raw(raw: RawConfig) -> Result<Settings, Vec<Problem>> {
        let mut v = Validator::default();

        let http = v.socket_addr("listen.http", raw.listen.http, "10.0.1.10:80");
        let https = v.socket_addr("listen.https", raw.listen.https, "10.0.1.10:443");
        let metrics = raw
            .listen
            .metrics
            .and_then(|m| v.socket_addr("listen.metrics", Some(m), "10.0.1.10:9180"));
        if let (Some(h), Some(s)) = (http, https) {
            if h == s && h.port() != 0 {
                v.problem(
                    "listen.https",
                    format!("is the same address as listen.http ({h})"),
                );
            }
        }

        // [acme] wins over [tls]: with both, the files are ignored (and not read).
        let acme = raw.acme.and_then(|value| v.acme(value));
        let acme_set = acme.is_some() || v.problems.iter().any(|p| p.key.starts_with("acme"));
        let tls = match (raw.tls.cert, raw.tls.key) {
            (None, None) if acme_set => None,
            (cert, key) if acme_set => {
                let keys = [
                    cert.as_ref().map(|_| "tls.cert"),
                    key.as_ref().map(|_| "tls.key"),
                ];
                let keys: Vec<_> = keys.into_iter().flatten().collect();
                v.warnings.push(Warning {
                    key: keys.join(", "),
                    message: "ignored: [acme] is set, and the certificate it gets is served \
                              for acme.domains"
                        .to_owned(),
                });
                None
            }
            (cert, key) => {
                let cert = v.path(
                    "tls.cert",
                    cert,
                    "the PEM certificate chain (or set [acme])",
                );
                let key = v.path("tls.key", key, "the PEM private key (or set [acme])");
                cert.zip(key).map(|(cert, key)| TlsFiles { cert, key })
            }
        };
        let upstream = v.upstream(raw.upstream.url);

        let access = AccessSettings {
            allow: v.networks("access.allow", &raw.access.allow),
            deny: v.networks("access.deny", &raw.access.deny),
            trusted_proxies: v.networks("access.trusted_proxies", &raw.access.trusted_proxies),
        };

        let t = raw.timeouts;
        let timeouts = Timeouts {
            connect: v.duration("timeouts.connect", t.connect, defaults::CONNECT),
            header_read: v.duration("timeouts.header_read", t.header_read, defaults::HEADER_READ),
            request: v.duration("timeouts.request", t.request, defaults::REQUEST),
            upstream_idle: v.duration(
                "timeouts.upstream_idle",
                t.upstream_idle,
                defaults::UPSTREAM_IDLE,
            ),
            shutdown_grace: v.duration(
                "timeouts.shutdown_grace",
                t.shutdown_grace,
                defaults::SHUTDOWN_GRACE,
            ),
        };

        let l = raw.limits;
        let limits = Limits {
            max_body_bytes: v.at_least(
                "limits.max_body_bytes",
                l.max_body_bytes,
                defaults::MAX_BODY_BYTES,
                0,
            ),
            // Below 1 KiB ordinary browsers' requests would be refused.
            max_header_bytes: v.at_least(
                "limits.max_header_bytes",
                l.max_header_bytes,
                defaults::MAX_HEADER_BYTES,
                1024,
            ) as usize,
            max_connections: v.at_least(
                "limits.max_connections",
                l.max_connections,
                defaults::MAX_CONNECTIONS,
                1,
            ) as usize,
            upstream_max_idle: v.at_least(
                "limits.upstream_max_idle",
                l.upstream_max_idle,
                defaults::UPSTREAM_MAX_IDLE,
                0,
            ) as usize,
        };

        let r = raw.redirect;
        let redirect = RedirectSettings {
            status: v.redirect_status("redirect.status", r.status, 301, &[301, 302, 303, 307, 308]),
            status_other_methods: v.redirect_status(
                "redirect.status_other_methods",
                r.status_other_methods,
                308,
                &[307, 308],
            ),
            https_port: match r.https_port {
                Some(0) => {
                    v.problem("redirect.https_port", "must be a port between 1 and 65535");
                    None
                }
                p => p,
            },
        };

        let hsts = Hsts {
            max_age: raw.hsts.max_age.unwrap_or(defaults::HSTS_MAX_AGE),
            include_subdomains: raw.hsts.include_subdomains.unwrap_or(false),
        };

        let log = LogSettings {
            format: match raw.log.format.as_deref() {
                None | Some("human") => LogFormat::Human,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    v.problem(
                        "log.format",
                        format!("{other:?} is not a log format (use \"human\" or \"json\")"),
                    );
                    LogFormat::Human
                }
            },
            level: match raw.log.level {
                None => "info".to_owned(),
                Some(level) => {
                    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
                        v.problem("log.level", format!("{level:?} is not a log filter: {e}"));
                    }
                    level
                }
            },
            access: raw.log.access.unwrap_or(true),
        };

        if !v.problems.is_empty() {
            return Err(v.problems);
        }
        // Every Option below is Some when no problem was recorded.
        let (Some(http), Some(https), Some(upstream)) = (http, https, upstream) else {
            unreachable!("a missing value is always recorded as a problem");
        };
        Ok(Settings {
            listen: Listen {
                http,
                https,
                metrics,
            },
            tls,
            upstream,
            access,
            timeouts,
            limits,
            redirect,
            hsts,
            log,
            acme,
            warnings: v.warnings,
        })
    }
}

fn environment(env: Option<std::collections::HashMap<String, String>>) -> config::Environment {
    let mut e = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .try_parsing(true)
        .ignore_empty(true)
        .source(env);
    for key in LIST_KEYS {
        e = e.with_list_parse_key(key);
    }
    e
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl Validator {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn socket_addr(
        &mut self,
        key: &str,
        value: Option<String>,
        example: &str,
    ) -> Option<SocketAddr> {
        let Some(value) = value else {
            self.problem(key, format!("missing (an address such as \"{example}\")"));
            return None;
        };
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    key,
                    format!(
                        "{value:?} is not an address with a port (write IP:PORT, \
                         such as \"{example}\" or \"[::]:443\")"
                    ),
                );
                None
            }
        }
    }

    /// `[acme]`: its own type checks the keys; problems are reported under `acme.KEY`.
    fn acme(&mut self, value: config::Value) -> Option<edge_gateway_acme::AcmeSettings> {
        match value.try_deserialize::<edge_gateway_acme::AcmeSettings>() {
            Err(e) => {
                self.problem("acme", e.to_string());
                None
            }
            Ok(acme) => match acme.validate() {
                Ok(()) => Some(acme),
                Err(e) => {
                    self.problem(&format!("acme.{}", e.key), e.message);
                    None
                }
            },
        }
    }

    fn path(&mut self, key: &str, value: Option<String>, what: &str) -> Option<PathBuf> {
        match value {
            None => {
                self.problem(key, format!("missing (the path of {what})"));
                None
            }
            Some(p) if p.is_empty() => {
                self.problem(key, format!("is empty (the path of {what})"));
                None
            }
            Some(p) => Some(PathBuf::from(p)),
        }
    }

    fn upstream(&mut self, value: Option<String>) -> Option<UpstreamSettings> {
        const KEY: &str = "upstream.url";
        let Some(value) = value else {
            self.problem(KEY, "missing (a URL such as \"http://127.0.0.1:8000\")");
            return None;
        };
        let uri: Uri = match value.parse() {
            Ok(u) => u,
            Err(e) => {
                self.problem(KEY, format!("{value:?} is not a URL: {e}"));
                return None;
            }
        };
        if uri.scheme() != Some(&Scheme::HTTP) {
            self.problem(
                KEY,
                format!("{value:?} must start with http:// (TLS to the upstream is not supported)"),
            );
            return None;
        }
        let Some(authority) = uri.authority().cloned() else {
            self.problem(KEY, format!("{value:?} has no host"));
            return None;
        };
        if authority.as_str().contains('@') {
            self.problem(KEY, format!("{value:?} must not carry credentials"));
            return None;
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        if path != "/" {
            self.problem(
                KEY,
                format!("{value:?} has a path; only scheme, host and port are supported"),
            );
            return None;
        }
        Some(UpstreamSettings {
            url: uri,
            scheme: Scheme::HTTP,
            authority,
        })
    }

    fn networks(&mut self, key: &str, entries: &[String]) -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let entry_key = format!("{key}[{i}]");
            let text = entry.trim();
            if let Ok(net) = text.parse::<IpNet>() {
                let network = net.trunc();
                if network != net {
                    self.warnings.push(Problem {
                        key: entry_key,
                        message: format!("{text:?} has host bits set; using {network}"),
                    });
                }
                nets.push(network);
            } else if let Ok(addr) = text.parse::<std::net::IpAddr>() {
                nets.push(IpNet::from(addr));
            } else {
                self.problem(
                    &entry_key,
                    format!(
                        "{entry:?} is not a CIDR (such as \"203.0.113.0/24\" or \
                         \"2001:db8::/32\") or an IP address"
                    ),
                );
            }
        }
        nets
    }

    fn duration(&mut self, key: &str, value: Option<String>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match parse_duration(&text) {
            Some(d) if d.is_zero() => {
                self.problem(key, "must be greater than zero");
                default
            }
            Some(d) => d,
            None => {
                self.problem(
                    key,
                    format!(
                        "{text:?} is not a duration (write it like \"500ms\", \"5s\" or \"2m\")"
                    ),
                );
                default
            }
        }
    }

    fn at_least(&mut self, key: &str, value: Option<u64>, default: u64, min: u64) -> u64 {
        match value {
            None => default,
            Some(n) if n < min => {
                self.problem(key, format!("{n} is too small (at least {min})"));
                default
            }
            Some(n) => n,
        }
    }

    fn redirect_status(
        &mut self,
        key: &str,
        value: Option<u16>,
        default: u16,
        allowed: &[u16],
    ) -> StatusCode {
        let code = value.unwrap_or(default);
        if !allowed.contains(&code) {
            let list: Vec<String> = allowed.iter().map(u16::to_string).collect();
            self.problem(
                key,
                format!(
                    "{code} is not allowed here (use one of {})",
                    list.join(", ")
                ),
            );
            return StatusCode::from_u16(default).expect("default status is valid");
        }
        StatusCode::from_u16(code).expect("allowed statuses are valid")
    }
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}
