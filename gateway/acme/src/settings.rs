//! The `[acme]` section of the configuration and its validation.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The `[acme]` section: where to get certificates, for which names, and where to keep them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcmeSettings {
    /// The ACME directory URL (`https://...`), for instance Let's Encrypt's or Pebble's.
    pub directory: String,
    /// The names the certificate must cover, one certificate for all of them.
    pub domains: Vec<String>,
    /// Contact URLs for the account (`mailto:ops@example.com`); may be empty.
    #[serde(default)]
    pub contact: Vec<String>,
    /// The directory holding the account key and the certificate (mode 0700); a relative path
    /// is taken from the working directory.
    pub storage: PathBuf,
    /// PEM bundle of CA certificates trusted for the directory's HTTPS; when unset, the
    /// system's roots are trusted.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Which challenge to answer.
    #[serde(default)]
    pub challenge: ChallengeKind,
    /// Renew this long before expiry; unset means when two thirds of the lifetime has passed.
    /// The CA's renewal window (ARI), where offered, takes precedence.
    #[serde(default, deserialize_with = "optional_duration")]
    pub renew_before: Option<Duration>,
    /// First delay after a failed attempt; doubled after each further failure (with jitter).
    #[serde(default = "default_retry_initial", deserialize_with = "duration")]
    pub retry_initial: Duration,
    /// Longest delay between two attempts.
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_max: Duration,
}

/// The challenge type answered to prove control of a name.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A token served on port 80 under `/.well-known/acme-challenge/`.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A self-signed certificate served on port 443 to clients offering ALPN `acme-tls/1`.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        })
    }
}

/// A setting that cannot work, with the key it is under.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("acme.{key}: {message}")]
pub struct SettingsError {
    /// The key under `[acme]`, such as `domains`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError {
        key,
        message: message.into(),
    }
}

fn default_retry_initial() -> Duration {
    Duration::from_secs(60)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(6 * 3600)
}

impl AcmeSettings {
    /// Settings with the defaults for everything but the four required keys.
    pub fn new(directory: &str, domains: &[&str], storage: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.to_owned(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            contact: Vec::new(),
            storage: storage.into(),
            ca_bundle: None,
            challenge: ChallengeKind::default(),
            renew_before: None,
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
        }
    }

    /// Checks every key without touching the disk or the network; the first error found names
    /// its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        validate_directory(&self.directory)?;
        if self.domains.is_empty() {
            return Err(invalid("domains", "must list at least one name"));
        }
        for (i, name) in self.domains.iter().enumerate() {
            validate_domain(name)?;
            if self.domains[..i]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
            {
                return Err(invalid("domains", format!("{name:?} is listed twice")));
            }
        }
        for contact in &self.contact {
            if !contact.starts_with("mailto:") || contact.len() == "mailto:".len() {
                return Err(invalid(
                    "contact",
                    format!("{contact:?} is not a mailto: URL (write \"mailto:ops@example.com\")"),
                ));
            }
        }
        // Relative paths are taken from the working directory, as `[tls]` paths are.
        if self.storage.as_os_str().is_empty() {
            return Err(invalid(
                "storage",
                "is empty (the directory for keys and certificates)",
            ));
        }
        if self
            .ca_bundle
            .as_ref()
            .is_some_and(|b| b.as_os_str().is_empty())
        {
            return Err(invalid(
                "ca_bundle",
                "is empty (leave it out to trust the system's roots)",
            ));
        }
        if self.retry_initial.is_zero() {
            return Err(invalid("retry_initial", "must be longer than zero"));
        }
        if self.retry_max < self.retry_initial {
            return Err(invalid(
                "retry_max",
                "must not be shorter than acme.retry_initial",
            ));
        }
        Ok(())
    }

    /// The names, lowercased, as the certificate and the resolver see them.
    pub fn names(&self) -> Vec<String> {
        self.domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect()
    }
}

fn validate_directory(url: &str) -> Result<(), SettingsError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| invalid("directory", format!("{url:?} is not a URL: {e}")))?;
    // RFC 8555 section 6.1: all ACME traffic is HTTPS.
    if uri.scheme_str() != Some("https") {
        return Err(invalid(
            "directory",
            format!("{url:?} is not an https:// URL; ACME directories are served over HTTPS"),
        ));
    }
    if uri.host().map_or(true, str::is_empty) {
        return Err(invalid("directory", format!("{url:?} has no host")));
    }
    Ok(())
}

fn validate_domain(name: &str) -> Result<(), SettingsError> {
    if name.starts_with("*.") {
        return Err(invalid(
            "domains",
            format!("{name:?} is a wildcard, which only dns-01 can prove; use explicit names"),
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(invalid(
            "domains",
            format!("{name:?} is an IP address; certificates are ordered for DNS names"),
        ));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !name_ok {
        return Err(invalid(
            "domains",
            format!("{name:?} is not a fully qualified DNS name"),
        ));
    }
    Ok(())
}

/// Parses `90s`, `15m`, `12h`, `30d` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (write 90s, 15m, 12h or 30d)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?} (use s, m, h or d)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(u64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    match DurationText::deserialize(de)? {
        DurationText::Seconds(s) => Ok(Duration::from_secs(s)),
        DurationText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

#[cfg(test)]
mod tests;
