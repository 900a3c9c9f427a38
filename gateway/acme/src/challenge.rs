//! Pending challenge answers, shared with the gateway's listeners.
//!
//! The manager writes an answer before telling the CA it is ready and removes it once the
//! authorization is settled; the listeners read on every challenge request. Each map sits behind
//! an `ArcSwap`, so a read is an atomic load and writers (a few per order) copy the map.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The path prefix the HTTP listener hands to [`ChallengeStore::http01_lookup`].
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol a CA offers for tls-alpn-01 (RFC 8737); never offered by browsers.
pub const ACME_TLS_ALPN_PROTOCOL: &[u8] = b"acme-tls/1";

/// What the HTTP listener should answer for a path.
#[derive(Debug, PartialEq, Eq)]
pub enum Http01Lookup {
    /// Not under [`HTTP01_PREFIX`]: the request takes the normal path (redirect).
    NotAChallenge,
    /// A token we are waiting on: answer 200 with this body, `text/plain`.
    Answer(Arc<str>),
    /// Under the prefix but not a pending token: answer 404.
    Unknown,
}

/// Challenge answers waiting for the CA to fetch them.
#[derive(Default)]
pub struct ChallengeStore {
    http01: ArcSwap<HashMap<Box<str>, Arc<str>>>,
    tls_alpn01: ArcSwap<HashMap<Box<str>, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for ChallengeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeStore")
            .field("http01_pending", &self.http01.load().len())
            .field("tls_alpn01_pending", &self.tls_alpn01.load().len())
            .finish()
    }
}

impl ChallengeStore {
    /// An empty store, shared between the manager and the listeners.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The key authorization for an HTTP-01 token, if that token is pending.
    pub fn http01(&self, token: &str) -> Option<Arc<str>> {
        self.http01.load().get(token).cloned()
    }

    /// Classifies a request path (without its query) for the HTTP listener.
    pub fn http01_lookup(&self, path: &str) -> Http01Lookup {
        let Some(token) = path.strip_prefix(HTTP01_PREFIX) else {
            return Http01Lookup::NotAChallenge;
        };
        match self.http01(token) {
            Some(answer) => Http01Lookup::Answer(answer),
            None => Http01Lookup::Unknown,
        }
    }

    /// The tls-alpn-01 certificate for a server name, if a challenge for it is pending.
    pub fn tls_alpn01(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01
            .load()
            .get(server_name.to_ascii_lowercase().as_str())
            .cloned()
    }

    pub(crate) fn put_http01(&self, token: &str, key_authorization: &str) {
        let answer: Arc<str> = Arc::from(key_authorization);
        self.http01.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(token.into(), answer.clone());
            map
        });
    }

    pub(crate) fn remove_http01(&self, token: &str) {
        self.http01.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(token);
            map
        });
    }

    pub(crate) fn put_tls_alpn01(&self, name: &str, cert: Arc<CertifiedKey>) {
        self.tls_alpn01.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(name.to_ascii_lowercase().into(), cert.clone());
            map
        });
    }

    pub(crate) fn remove_tls_alpn01(&self, name: &str) {
        self.tls_alpn01.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(name.to_ascii_lowercase().as_str());
            map
        });
    }
}

/// The self-signed certificate proving `name` for tls-alpn-01: the name as its only SAN and the
/// SHA-256 of the key authorization in the critical acmeIdentifier extension (RFC 8737 §3).
pub fn tls_alpn01_certificate(name: &str, key_auth_digest: &[u8]) -> Result<CertifiedKey, String> {
    let key = KeyPair::generate().map_err(|e| format!("key generation failed: {e}"))?;
    let mut params = CertificateParams::new(vec![name.to_owned()])
        .map_err(|e| format!("{name:?} cannot be a certificate name: {e}"))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(key_auth_digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("signing the challenge certificate failed: {e}"))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("the challenge key is not usable: {e}"))?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing_key,
    ))
}

#[cfg(test)]
mod tests;
