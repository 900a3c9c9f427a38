//! TLS: certificates by SNI name, swappable at run time, and the server configuration.
//!
//! [`CertResolver`] answers rustls's question "which certificate for this handshake?" from an
//! immutable [`CertTable`] behind an `ArcSwap`: a handshake reads the table without a lock,
//! and [`CertResolver::install`] (used by ACME renewals and reloads) swaps in a new table that
//! applies from the next handshake on. Connections already open keep the certificate they
//! were given.
//!
//! Certificates and keys are read from PEM with `rustls-pki-types`; keys may be PKCS#8,
//! PKCS#1 (RSA) or SEC1 (EC). A key that does not belong to the certificate is refused when it
//! is loaded, not at the first handshake.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key that cannot be used; each names the key of `[tls]` and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read, or is not PEM.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// `tls.cert` or `tls.key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// No `CERTIFICATE` block in the file.
    #[error("tls.cert: {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No private key block in the file.
    #[error(
        "tls.key: {} holds no private key (expected PEM PKCS#8, PKCS#1 or SEC1)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A key block that the crypto provider cannot use.
    #[error("tls.key: {}: unusable key: {source}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The provider's reason.
        #[source]
        source: rustls::Error,
    },
    /// The key is not the certificate's.
    #[error(
        "tls.key: {} does not match the certificate in {} (tls.cert)",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate does not parse as X.509.
    #[error("tls.cert: {}: {source}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls found.
        #[source]
        source: rustls::Error,
    },
    /// The server configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The crypto provider used everywhere (ring, to keep builds fast).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its key from PEM files, checking that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            key: "tls.cert",
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = match PrivateKeyDer::from_pem_file(key) {
        Ok(k) => k,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key.to_owned(),
            })
        }
        Err(source) => {
            return Err(TlsError::Read {
                key: "tls.key",
                path: key.to_owned(),
                source,
            })
        }
    };
    certified_key(chain, private).map_err(|e| match e {
        KeyError::Key(source) => TlsError::BadKey {
            path: key.to_owned(),
            source,
        },
        KeyError::Mismatch => TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        KeyError::Certificate(source) => TlsError::BadCertificate {
            path: cert.to_owned(),
            source,
        },
    })
}

/// Why a chain and a key do not make a [`CertifiedKey`] (for callers holding PEM in memory,
/// such as ACME).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key cannot be used by the provider.
    #[error("unusable private key: {0}")]
    Key(#[source] rustls::Error),
    /// The key is not the leaf certificate's.
    #[error("the private key does not match the certificate")]
    Mismatch,
    /// The leaf certificate does not parse.
    #[error("bad certificate: {0}")]
    Certificate(#[source] rustls::Error),
}

/// Pairs a chain (leaf first) with its key, refusing a key that is not the leaf's.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, KeyError> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(KeyError::Key)?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // Some key types cannot report their public key; they are taken on trust.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(KeyError::Mismatch),
        Err(e) => Err(KeyError::Certificate(e)),
    }
}

/// An immutable set of certificates: by exact or wildcard SNI name, and a default.
#[derive(Clone, Default)]
pub struct CertTable {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertTable {
    /// The certificate for `sni` (None when the client sent no name).
    ///
    /// Exact name first, then a `*.` wildcard for its parent, then the default; when no default
    /// is set, exactly one name is installed and the client sent no name, that one. A name
    /// with no entry and no default gets nothing (the handshake is refused with an alert).
    pub fn lookup(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        if let Some(name) = sni {
            if let Some(k) = self.by_name.get(name) {
                return Some(k);
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.by_name.get(&format!("*.{parent}")) {
                    return Some(k);
                }
            }
        }
        if let Some(k) = &self.default {
            return Some(k);
        }
        if sni.is_none() && self.by_name.len() == 1 {
            return self.by_name.values().next();
        }
        None
    }

    /// Names with a certificate installed.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

impl fmt::Debug for CertTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertTable")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .field("default", &self.default.is_some())
            .finish()
    }
}

/// The ALPN protocol of ACME TLS-ALPN-01 validations (RFC 8737); browsers never offer it.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Pending TLS-ALPN-01 answers: the challenge certificate for a name, if one is pending.
pub trait AlpnChallenges: Send + Sync + 'static {
    /// The self-signed challenge certificate for `name`.
    fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>>;
}

/// The swappable certificate resolver handed to rustls.
#[derive(Default)]
pub struct CertResolver {
    table: ArcSwap<CertTable>,
    /// Set once by ACME when `acme.challenge` is tls-alpn-01.
    alpn_challenges: std::sync::OnceLock<Arc<dyn AlpnChallenges>>,
}

impl CertResolver {
    /// An empty resolver: every handshake fails until a certificate is installed.
    pub fn new() -> CertResolver {
        CertResolver::default()
    }

    /// A resolver answering every name with `key`.
    pub fn with_default(key: Arc<CertifiedKey>) -> CertResolver {
        let r = CertResolver::new();
        r.set_default(Some(key));
        r
    }

    /// Installs or replaces the certificate for `name` (lower-cased; `*.example.com` for a
    /// wildcard). Applies from the next handshake.
    pub fn install(&self, name: &str, key: Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        self.table.rcu(|t| {
            let mut t = CertTable::clone(t);
            t.by_name.insert(name.clone(), key.clone());
            t
        });
    }

    /// Removes the certificate for `name`.
    pub fn remove(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.table.rcu(|t| {
            let mut t = CertTable::clone(t);
            t.by_name.remove(&name);
            t
        });
    }

    /// Sets (or clears) the certificate for clients whose name has no entry of its own.
    pub fn set_default(&self, key: Option<Arc<CertifiedKey>>) {
        self.table.rcu(|t| {
            let mut t = CertTable::clone(t);
            t.default = key.clone();
            t
        });
    }

    /// Answers handshakes that offer `acme-tls/1` from `challenges` (set once; later calls
    /// are ignored).
    pub fn set_alpn_challenges(&self, challenges: Arc<dyn AlpnChallenges>) {
        let _ = self.alpn_challenges.set(challenges);
    }

    /// Replaces the whole table at once.
    pub fn replace(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }

    /// The table in force.
    pub fn table(&self) -> Arc<CertTable> {
        self.table.load_full()
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CertResolver")
            .field(&*self.table.load())
            .finish()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        // A CA validating TLS-ALPN-01 offers acme-tls/1 alone; it gets the challenge
        // certificate or nothing, never the site's.
        if let Some(challenges) = self.alpn_challenges.get() {
            if hello
                .alpn()
                .is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN))
            {
                let key = sni.and_then(|name| challenges.certificate(name));
                tracing::info!(
                    tls.sni = sni.unwrap_or("-"),
                    answered = key.is_some(),
                    "TLS-ALPN-01 validation handshake"
                );
                return key;
            }
        }
        let table = self.table.load();
        // rustls hands SNI over lower-cased already; this only guards the exceptional case.
        let key = match sni {
            Some(n) if n.bytes().any(|b| b.is_ascii_uppercase()) => {
                table.lookup(Some(&n.to_ascii_lowercase())).cloned()
            }
            _ => table.lookup(sni).cloned(),
        };
        if key.is_none() {
            // rustls answers with an alert; this line says which name was asked for.
            tracing::info!(
                tls.sni = sni.unwrap_or("-"),
                "No certificate for this name; handshake refused"
            );
        }
        key
    }
}

/// The server configuration: TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1` (and
/// `acme-tls/1` last, chosen only by a client that offers nothing else we speak).
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}
