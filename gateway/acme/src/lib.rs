//! The ACME client of edge-gateway: gets certificates for the configured names and keeps them.
//!
//! One concern lives here: holding a valid certificate for every configured name. The gateway
//! wires it in at three points:
//!
//! - [`ChallengeStore`]: the HTTP listener answers `/.well-known/acme-challenge/TOKEN` from it
//!   (and, for tls-alpn-01, the TLS resolver serves the challenge certificate from it). Reads
//!   are lock-free.
//! - [`AcmeManager::run`]: a background task that loads the stored certificate or orders one,
//!   renews it in time, and hands each new [`rustls::sign::CertifiedKey`] to a callback that
//!   installs it into the gateway's resolver.
//! - [`AcmeEvent`]: what happened, for metrics (expiry per name, renewals by result).
//!
//! The settings type, [`AcmeSettings`], is the `[acme]` section of the gateway's configuration.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

mod certificate;
mod challenge;
mod client;
mod error;
mod events;
mod manager;
mod settings;
mod storage;

pub use certificate::{CertificateInfo, Issued};
pub use challenge::{
    tls_alpn01_certificate, ChallengeStore, Http01Lookup, ACME_TLS_ALPN_PROTOCOL, HTTP01_PREFIX,
};
pub use error::AcmeError;
pub use events::{AcmeEvent, CertificateSource};
pub use manager::{AcmeManager, CurrentCertificate};
pub use settings::{parse_duration, AcmeSettings, ChallengeKind, SettingsError};
pub use storage::{Storage, StorageError};
