//! What can go wrong getting a certificate, in words an operator can act on.

use std::error::Error as StdError;

use crate::settings::SettingsError;
use crate::storage::StorageError;

/// A failure of the ACME client; the message names the name, the challenge, the URL or the file.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// An `[acme]` setting cannot work.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The storage directory or a file in it cannot be used.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The CA bundle for the directory cannot be used.
    #[error("acme.ca_bundle: {path}: {detail}")]
    CaBundle {
        /// The bundle's path.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The directory URL did not give an ACME directory.
    #[error("ACME directory {url}: {detail}")]
    Directory {
        /// The configured URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// A request to the CA failed, or the CA refused it with a problem document.
    #[error("{step} failed: {detail}")]
    Ca {
        /// What was being done, such as "creating the order for app.example.com".
        step: String,
        /// The CA's problem detail (with its type) or the transport error.
        detail: String,
        /// The problem document's type, such as `urn:ietf:params:acme:error:rateLimited`.
        problem_type: Option<String>,
    },
    /// The CA tried the challenge and it failed.
    #[error("the CA could not validate {challenge} for {name}: {detail}")]
    Validation {
        /// The name being proven.
        name: String,
        /// The challenge type.
        challenge: String,
        /// The CA's problem detail, for instance that it could not connect.
        detail: String,
    },
    /// The CA does not offer the configured challenge for a name.
    #[error("the CA offers no {challenge} challenge for {name} (it offers: {offered})")]
    ChallengeNotOffered {
        /// The name.
        name: String,
        /// The configured challenge type.
        challenge: String,
        /// What the CA offered instead.
        offered: String,
    },
    /// What the CA issued is not usable.
    #[error("the certificate issued for {names} is not usable: {detail}")]
    BadCertificate {
        /// The names ordered.
        names: String,
        /// What is wrong.
        detail: String,
    },
}

impl AcmeError {
    /// Wraps an instant-acme error with the step it happened in.
    pub(crate) fn ca(step: impl Into<String>, err: instant_acme::Error) -> Self {
        let problem_type = match &err {
            instant_acme::Error::Api(p) => p.r#type.clone(),
            _ => None,
        };
        Self::Ca {
            step: step.into(),
            detail: describe(&err),
            problem_type,
        }
    }
}

/// A one-line account of an instant-acme error: the CA's problem detail when there is one,
/// otherwise the chain of causes (a transport error's cause is the useful part).
pub(crate) fn describe(err: &instant_acme::Error) -> String {
    match err {
        instant_acme::Error::Api(problem) => describe_problem(problem),
        instant_acme::Error::Timeout(_) => {
            "the CA did not finish in time (the order stays pending at the CA)".to_owned()
        }
        other => chain(other),
    }
}

pub(crate) fn describe_problem(problem: &instant_acme::Problem) -> String {
    let mut text = problem
        .detail
        .clone()
        .unwrap_or_else(|| "no detail given".to_owned());
    if let Some(kind) = &problem.r#type {
        text.push_str(&format!(" ({kind})"));
    }
    for sub in &problem.subproblems {
        text.push_str(&format!("; {sub}"));
    }
    text
}

/// `outer: inner: innermost`, skipping a cause whose text is already shown.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}
