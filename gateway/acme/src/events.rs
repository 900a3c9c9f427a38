//! What the manager reports, for metrics and for tests.

use std::time::{Duration, SystemTime};

use crate::certificate::CertificateInfo;

/// Where an installed certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateSource {
    /// Read from the storage directory at start.
    Stored,
    /// Just issued by the CA.
    Issued,
}

/// One step of the manager's life.
#[derive(Clone, Debug)]
pub enum AcmeEvent {
    /// A certificate was handed to the gateway's resolver.
    Installed {
        /// About the certificate.
        info: CertificateInfo,
        /// Stored or newly issued.
        source: CertificateSource,
    },
    /// The next order is due at `at`.
    RenewalScheduled {
        /// When.
        at: SystemTime,
        /// Why then: two thirds of the lifetime, `renew_before`, or the CA's window.
        reason: &'static str,
    },
    /// An order failed; the current certificate, if any, stays in use.
    OrderFailed {
        /// The error, as logged.
        error: String,
        /// How long until the next attempt.
        retry_in: Duration,
        /// Consecutive failures so far.
        attempt: u32,
    },
}

impl AcmeEvent {
    /// For `edge_gateway_acme_renewals_total{result}`: `success` after an issued certificate,
    /// `failure` after a failed order, nothing otherwise.
    pub fn renewal_result(&self) -> Option<&'static str> {
        match self {
            Self::Installed {
                source: CertificateSource::Issued,
                ..
            } => Some("success"),
            Self::OrderFailed { .. } => Some("failure"),
            _ => None,
        }
    }

    /// For `edge_gateway_certificate_expiry_timestamp_seconds{name}`: each name of a newly
    /// installed certificate with its expiry as Unix seconds.
    pub fn expiry_by_name(&self) -> Vec<(&str, f64)> {
        match self {
            Self::Installed { info, .. } => {
                let expiry = info
                    .not_after
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                info.names.iter().map(|n| (n.as_str(), expiry)).collect()
            }
            _ => Vec::new(),
        }
    }
}
