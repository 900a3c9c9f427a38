//! Reading a certificate chain: its names, serial and validity, and the key it pairs with.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::CertificateIdentifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What an operator and the scheduler need to know about a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The DNS names in its subjectAltName, lowercased.
    pub names: Vec<String>,
    /// The serial number, lowercase hex without leading zeros (as Pebble and openssl show it).
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl CertificateInfo {
    /// Reads the leaf certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(dns) = name {
                    names.push(dns.to_ascii_lowercase());
                }
            }
        }
        let serial = cert.raw_serial();
        let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
        let serial: String = serial[first..].iter().map(|b| format!("{b:02x}")).collect();
        let validity = cert.validity();
        Ok(Self {
            names,
            serial: if serial.is_empty() {
                "0".into()
            } else {
                serial
            },
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
        })
    }

    /// Whether the certificate names every one of `names`.
    pub fn covers(&self, names: &[String]) -> bool {
        names
            .iter()
            .all(|n| self.names.iter().any(|have| have.eq_ignore_ascii_case(n)))
    }

    /// The validity period's length.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Whether `at` lies inside the validity period.
    pub fn valid_at(&self, at: SystemTime) -> bool {
        self.not_before <= at && at < self.not_after
    }

    /// When two thirds of the lifetime has passed, or `renew_before` ahead of expiry when that
    /// is set and shorter than the lifetime.
    pub fn renewal_due(&self, renew_before: Option<Duration>) -> SystemTime {
        let lifetime = self.lifetime();
        match renew_before {
            Some(before) if before < lifetime => self.not_after - before,
            _ => self.not_before + lifetime * 2 / 3,
        }
    }
}

fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// RFC 3339 in UTC, for logs.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// A certificate chain with its key, ready to be served.
#[derive(Clone)]
pub struct Issued {
    /// About the leaf.
    pub info: CertificateInfo,
    /// The chain and signing key, for the gateway's resolver.
    pub certified_key: Arc<CertifiedKey>,
    /// The chain, PEM, leaf first.
    pub chain_pem: String,
    /// The private key, PEM.
    pub(crate) key_pem: String,
    /// The leaf's identifier for ACME Renewal Information, when it has an AKI.
    pub(crate) ari_id: Option<CertificateIdentifier<'static>>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Builds the servable form of a PEM chain and key, checking that they belong together.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate chain does not parse: {e}"))?;
        let leaf = chain.first().ok_or("the certificate chain is empty")?;
        let info = CertificateInfo::from_der(leaf)?;
        let ari_id = CertificateIdentifier::try_from(leaf)
            .ok()
            .map(CertificateIdentifier::into_owned);
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("the private key does not parse: {e}"))?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("the private key is not usable: {e}"))?;
        let certified_key = CertifiedKey::new(chain, signing_key);
        certified_key
            .keys_match()
            .map_err(|e| format!("the private key does not match the certificate: {e}"))?;
        Ok(Self {
            info,
            certified_key: Arc::new(certified_key),
            chain_pem: chain_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            ari_id,
        })
    }
}

#[cfg(test)]
mod tests;
