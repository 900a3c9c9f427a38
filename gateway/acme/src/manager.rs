//! The task that keeps a valid certificate: load or order, schedule renewal, retry, install.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, Key, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::RootCertStore;
use rustls_pki_types::PrivateKeyDer;
use tokio::sync::broadcast;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::certificate::{rfc3339, Issued};
use crate::challenge::{tls_alpn01_certificate, ChallengeStore};
use crate::client::{load_ca_bundle, AcmeHttp};
use crate::error::{describe, describe_problem, AcmeError};
use crate::events::{AcmeEvent, CertificateSource};
use crate::settings::{AcmeSettings, ChallengeKind};
use crate::storage::Storage;

/// Pebble sleeps up to 15 s before each validation attempt and Let's Encrypt may try from
/// several places; three minutes covers both without hanging on a CA that never decides.
const VALIDATION_POLICY: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_secs(1))
    .backoff(1.25)
    .timeout(Duration::from_secs(180));
const CERTIFICATE_POLICY: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_secs(1))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));
/// Longest single sleep, so that a wall-clock jump (suspend, NTP step) is noticed within it.
const SLEEP_SLICE: Duration = Duration::from_secs(60);

/// The certificate in use, readable at any time (lock-free).
#[derive(Clone, Default, Debug)]
pub struct CurrentCertificate(Arc<ArcSwapOption<Issued>>);

impl CurrentCertificate {
    /// The certificate now installed, if any.
    pub fn get(&self) -> Option<Arc<Issued>> {
        self.0.load_full()
    }
}

/// Gets and keeps the certificate for `[acme] domains`.
pub struct AcmeManager {
    settings: Arc<AcmeSettings>,
    names: Vec<String>,
    storage: Storage,
    roots: Option<RootCertStore>,
    challenges: Arc<ChallengeStore>,
    events: broadcast::Sender<AcmeEvent>,
    current: CurrentCertificate,
}

impl std::fmt::Debug for AcmeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeManager")
            .field("directory", &self.settings.directory)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl AcmeManager {
    /// Validates the settings, opens the storage (creating the directory and the account key on
    /// first use) and reads the stored certificate if it is valid for every configured name.
    pub fn new(settings: AcmeSettings, challenges: Arc<ChallengeStore>) -> Result<Self, AcmeError> {
        settings.validate()?;
        let roots = settings
            .ca_bundle
            .as_deref()
            .map(load_ca_bundle)
            .transpose()?;
        let storage = Storage::open(&settings.storage)?;
        storage.account_key()?;
        let names = settings.names();
        let manager = Self {
            settings: Arc::new(settings),
            names,
            storage,
            roots,
            challenges,
            events: broadcast::channel(64).0,
            current: CurrentCertificate::default(),
        };
        manager.current.0.store(manager.load_stored().map(Arc::new));
        Ok(manager)
    }

    /// What `edge-gateway check` verifies: the settings, the CA bundle and, when it exists,
    /// the storage directory. Creates nothing and sends nothing.
    pub fn check(settings: &AcmeSettings) -> Result<(), AcmeError> {
        settings.validate()?;
        if let Some(bundle) = &settings.ca_bundle {
            load_ca_bundle(bundle)?;
        }
        Storage::check(&settings.storage)?;
        Ok(())
    }

    /// Events from now on; a receiver that falls 64 events behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<AcmeEvent> {
        self.events.subscribe()
    }

    /// A handle on the certificate in use.
    pub fn current(&self) -> CurrentCertificate {
        self.current.clone()
    }

    /// Runs [`AcmeManager::run`] on the current tokio runtime.
    pub fn spawn<F>(self, install: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(&Issued) + Send + Sync + 'static,
    {
        tokio::spawn(self.run(install))
    }

    /// Keeps a certificate for ever: installs the stored one, orders when there is none or
    /// when renewal is due, and after a failure retries with exponential backoff and jitter
    /// while the certificate in use stays installed. `install` receives every certificate to
    /// serve; it should swap it into the TLS resolver and return quickly.
    pub async fn run<F>(self, install: F)
    where
        F: Fn(&Issued) + Send + Sync + 'static,
    {
        let span = info_span!("acme", directory = %self.settings.directory);
        self.run_inner(install).instrument(span).await;
    }

    async fn run_inner<F: Fn(&Issued)>(self, install: F) {
        if let Some(stored) = self.current.get() {
            install(&stored);
            self.emit(AcmeEvent::Installed {
                info: stored.info.clone(),
                source: CertificateSource::Stored,
            });
        }
        let mut failures = 0u32;
        loop {
            let current = self.current.get();
            if let (Some(cur), 0) = (&current, failures) {
                let (due, reason, recheck) = self.renewal_time(cur).await;
                self.emit(AcmeEvent::RenewalScheduled { at: due, reason });
                info!(
                    names = %self.names.join(","),
                    serial = %cur.info.serial,
                    not_after = %rfc3339(cur.info.not_after),
                    renewal.due = %rfc3339(due),
                    renewal.reason = reason,
                    "Renewal due at {}", rfc3339(due)
                );
                match recheck {
                    Some(recheck) if SystemTime::now() + recheck < due => {
                        sleep_until(SystemTime::now() + recheck).await;
                        continue;
                    }
                    _ => sleep_until(due).await,
                }
            }
            match self.order_surviving_nonces(current.as_deref()).await {
                Ok(issued) => {
                    failures = 0;
                    self.adopt(issued, &install);
                }
                Err(err) => {
                    failures += 1;
                    let retry_in = self.backoff(failures);
                    self.log_failure(&err, current.as_deref(), retry_in, failures);
                    self.emit(AcmeEvent::OrderFailed {
                        error: err.to_string(),
                        retry_in,
                        attempt: failures,
                    });
                    tokio::time::sleep(retry_in).await;
                }
            }
        }
    }

    fn adopt(&self, issued: Issued, install: &impl Fn(&Issued)) {
        let info = &issued.info;
        info!(
            names = %info.names.join(","),
            serial = %info.serial,
            not_before = %rfc3339(info.not_before),
            not_after = %rfc3339(info.not_after),
            "Certificate issued, serial {}, valid until {}", info.serial, rfc3339(info.not_after)
        );
        // A certificate that cannot be stored is still served: dropping it would leave the old
        // one (or none) in use. The cost is a new order after the next restart.
        match self
            .storage
            .store_certificate(&issued.chain_pem, &issued.key_pem)
        {
            Ok(()) => debug!(path = %self.storage.certificate_path().display(), "Stored"),
            Err(err) => error!(error = %err, "Could not store the new certificate; serving it"),
        }
        install(&issued);
        let info = issued.info.clone();
        self.current.0.store(Some(Arc::new(issued)));
        self.emit(AcmeEvent::Installed {
            info,
            source: CertificateSource::Issued,
        });
    }

    fn emit(&self, event: AcmeEvent) {
        // No receiver is fine: metrics may be off.
        let _ = self.events.send(event);
    }

    fn load_stored(&self) -> Option<Issued> {
        let path = self.storage.certificate_path();
        let stored = match self.storage.load_certificate() {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                info!(names = %self.names.join(","), "No stored certificate; ordering one");
                return None;
            }
            Err(err) => {
                warn!(error = %err, "Stored certificate unreadable; ordering a new one");
                return None;
            }
        };
        let issued = match Issued::from_pem(&stored.chain_pem, &stored.key_pem) {
            Ok(issued) => issued,
            Err(detail) => {
                warn!(
                    path = %path.display(),
                    %detail,
                    "Stored certificate unusable; ordering a new one"
                );
                return None;
            }
        };
        let info = &issued.info;
        let missing: Vec<_> = self
            .names
            .iter()
            .filter(|n| !info.covers(std::slice::from_ref(n)))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            info!(
                serial = %info.serial,
                missing = %missing.join(","),
                "Stored certificate does not cover {}; ordering a new one", missing.join(",")
            );
            return None;
        }
        if !info.valid_at(SystemTime::now()) {
            info!(
                serial = %info.serial,
                not_after = %rfc3339(info.not_after),
                "Stored certificate is not valid now; ordering a new one"
            );
            return None;
        }
        info!(
            path = %path.display(),
            serial = %info.serial,
            not_after = %rfc3339(info.not_after),
            "Using the stored certificate, serial {}, valid until {}",
            info.serial,
            rfc3339(info.not_after)
        );
        Some(issued)
    }

    /// When to order the next certificate: in the CA's ARI window where it offers one,
    /// otherwise at two thirds of the lifetime (or `renew_before` ahead of expiry). The third
    /// value is how soon the CA asked to be asked again about its window.
    async fn renewal_time(&self, cur: &Issued) -> (SystemTime, &'static str, Option<Duration>) {
        let local = cur.info.renewal_due(self.settings.renew_before);
        let local_reason = match self.settings.renew_before {
            Some(before) if before < cur.info.lifetime() => "renew_before",
            _ => "two thirds of the lifetime",
        };
        let Some(id) = &cur.ari_id else {
            return (local, local_reason, None);
        };
        match self.renewal_window(id).await {
            Ok(Some((start, end, recheck))) => {
                let span = end.duration_since(start).unwrap_or_default();
                let at = start + span.mul_f64(random_fraction());
                (at, "the CA's renewal window (ARI)", Some(recheck))
            }
            Ok(None) => (local, local_reason, None),
            Err(err) => {
                debug!(error = %err, "ACME renewal information unavailable; using the local rule");
                (local, local_reason, None)
            }
        }
    }

    async fn renewal_window(
        &self,
        id: &instant_acme::CertificateIdentifier<'static>,
    ) -> Result<Option<(SystemTime, SystemTime, Duration)>, AcmeError> {
        let http = AcmeHttp::new(self.roots.as_ref())?;
        if !http.check_directory(&self.settings.directory).await? {
            return Ok(None);
        }
        let account = self.account(&http).await?;
        let (info, recheck) = account
            .renewal_info(id)
            .await
            .map_err(|e| AcmeError::ca("fetching ACME renewal information", e))?;
        let window = info.suggested_window;
        Ok(Some((window.start.into(), window.end.into(), recheck)))
    }

    async fn account(&self, http: &AcmeHttp) -> Result<Account, AcmeError> {
        let pkcs8 = self.storage.account_key()?;
        let key = Key::from_pkcs8_der(pkcs8.clone_key())
            .map_err(|e| AcmeError::ca("loading the account key", e))?;
        // newAccount with an existing key returns that account (RFC 8555 §7.3.1), and creates
        // it again at a CA that lost it (Pebble forgets everything when it restarts).
        let (account, _) = Account::builder_with_http(Box::new(http.clone()))
            .create_from_key(
                (key, PrivateKeyDer::Pkcs8(pkcs8)),
                self.settings.directory.clone(),
            )
            .await
            .map_err(|e| AcmeError::ca("registering the ACME account", e))?;
        if !self.settings.contact.is_empty() {
            let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
            account
                .update_contacts(&contact)
                .await
                .map_err(|e| AcmeError::ca("setting the account's contact", e))?;
        }
        debug!(account = account.id(), "ACME account ready");
        Ok(account)
    }

    /// One whole order: account, order, challenges, validation, finalization, download.
    async fn order(&self, replacing: Option<&Issued>) -> Result<Issued, AcmeError> {
        let names = self.names.join(",");
        let http = AcmeHttp::new(self.roots.as_ref())?;
        let has_ari = http.check_directory(&self.settings.directory).await?;
        let account = self.account(&http).await?;

        let identifiers: Vec<Identifier> =
            self.names.iter().cloned().map(Identifier::Dns).collect();
        let replaces = replacing.and_then(|r| r.ari_id.clone()).filter(|_| has_ari);
        let mut order = match replaces {
            Some(id) => {
                match account
                    .new_order(&NewOrder::new(&identifiers).replaces(id))
                    .await
                {
                    Ok(order) => order,
                    Err(err) => {
                        // A CA may refuse `replaces` (already replaced, other account); an
                        // ordinary order is still fine.
                        warn!(
                            error = %describe(&err),
                            "Order with replaces refused; ordering plainly"
                        );
                        account
                            .new_order(&NewOrder::new(&identifiers))
                            .await
                            .map_err(|e| {
                                AcmeError::ca(format!("creating the order for {names}"), e)
                            })?
                    }
                }
            }
            None => account
                .new_order(&NewOrder::new(&identifiers))
                .await
                .map_err(|e| AcmeError::ca(format!("creating the order for {names}"), e))?,
        };
        info!(names = %names, order.url = order.url(), "Order created for {names}");

        let answers = PendingAnswers {
            store: &self.challenges,
            http01: Vec::new(),
            tls_alpn01: Vec::new(),
        };
        let answers = self.answer_challenges(&mut order, answers).await?;
        match order.poll_ready(&VALIDATION_POLICY).await {
            Ok(OrderStatus::Ready) => info!(names = %names, "Validated {names}"),
            Ok(status) => return Err(validation_error(&mut order, &names, Ok(status)).await),
            Err(err @ instant_acme::Error::Api(_)) => {
                return Err(validation_error(&mut order, &names, Err(err)).await)
            }
            Err(err) => {
                return Err(AcmeError::ca(
                    format!("waiting for the CA to validate {names}"),
                    err,
                ))
            }
        }
        drop(answers);

        let key = KeyPair::generate().map_err(|e| AcmeError::BadCertificate {
            names: names.clone(),
            detail: format!("key generation failed: {e}"),
        })?;
        let csr = CertificateParams::new(self.names.clone())
            .and_then(|mut params| {
                params.distinguished_name = DistinguishedName::new();
                params.serialize_request(&key)
            })
            .map_err(|e| AcmeError::BadCertificate {
                names: names.clone(),
                detail: format!("the CSR could not be made: {e}"),
            })?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| AcmeError::ca(format!("finalizing the order for {names}"), e))?;
        let chain = order
            .poll_certificate(&CERTIFICATE_POLICY)
            .await
            .map_err(|e| AcmeError::ca(format!("downloading the certificate for {names}"), e))?;
        let issued = Issued::from_pem(&chain, &key.serialize_pem()).map_err(|detail| {
            AcmeError::BadCertificate {
                names: names.clone(),
                detail,
            }
        })?;
        if !issued.info.covers(&self.names) {
            return Err(AcmeError::BadCertificate {
                names,
                detail: format!("it names only {}", issued.info.names.join(",")),
            });
        }
        Ok(issued)
    }

    /// Puts an answer in the store for each pending authorization and tells the CA to check.
    async fn answer_challenges<'a>(
        &self,
        order: &mut Order,
        mut answers: PendingAnswers<'a>,
    ) -> Result<PendingAnswers<'a>, AcmeError> {
        let kind = self.settings.challenge;
        let mut authorizations = order.authorizations();
        while let Some(result) = authorizations.next().await {
            let mut authz =
                result.map_err(|e| AcmeError::ca("fetching the order's authorizations", e))?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => {
                    info!(name = %name, "Authorization for {name} is still valid; no challenge");
                    continue;
                }
                other => {
                    return Err(AcmeError::Ca {
                        step: format!("authorizing {name}"),
                        detail: format!("the CA holds the authorization as {other:?}"),
                        problem_type: None,
                    })
                }
            }
            let offered = authz
                .challenges
                .iter()
                .map(|c| challenge_name(&c.r#type))
                .collect::<Vec<_>>()
                .join(", ");
            let wanted = match kind {
                ChallengeKind::Http01 => ChallengeType::Http01,
                ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let Some(mut challenge) = authz.challenge(wanted) else {
                return Err(AcmeError::ChallengeNotOffered {
                    name,
                    challenge: kind.to_string(),
                    offered,
                });
            };
            let key_auth = challenge.key_authorization();
            let token = challenge.token.clone();
            match kind {
                ChallengeKind::Http01 => {
                    self.challenges.put_http01(&token, key_auth.as_str());
                    answers.http01.push(token.clone());
                }
                ChallengeKind::TlsAlpn01 => {
                    let cert = tls_alpn01_certificate(&name, key_auth.digest().as_ref()).map_err(
                        |detail| AcmeError::BadCertificate {
                            names: name.clone(),
                            detail,
                        },
                    )?;
                    self.challenges.put_tls_alpn01(&name, Arc::new(cert));
                    answers.tls_alpn01.push(name.clone());
                }
            }
            challenge.set_ready().await.map_err(|e| {
                AcmeError::ca(format!("telling the CA that {kind} for {name} is ready"), e)
            })?;
            info!(
                name = %name,
                challenge = %kind,
                token = %token,
                "Challenge ready: {kind} for {name}"
            );
        }
        Ok(answers)
    }

    fn log_failure(&self, err: &AcmeError, current: Option<&Issued>, retry_in: Duration, n: u32) {
        let names = self.names.join(",");
        let retry = format!("{}s", retry_in.as_secs());
        match current {
            Some(cur) if cur.info.valid_at(SystemTime::now()) => error!(
                names = %names,
                error = %err,
                attempt = n,
                retry.r#in = %retry,
                serial = %cur.info.serial,
                not_after = %rfc3339(cur.info.not_after),
                "Certificate order failed: {err}; keeping serial {} (valid until {}), \
                 retrying in {retry}",
                cur.info.serial,
                rfc3339(cur.info.not_after)
            ),
            Some(cur) => error!(
                names = %names,
                error = %err,
                attempt = n,
                retry.r#in = %retry,
                "Certificate order failed: {err}; the certificate in use expired at {}, \
                 retrying in {retry}",
                rfc3339(cur.info.not_after)
            ),
            None => error!(
                names = %names,
                error = %err,
                attempt = n,
                retry.r#in = %retry,
                "Certificate order failed: {err}; no certificate for {names} yet, so their \
                 handshakes fail; retrying in {retry}"
            ),
        }
    }

    /// `retry_initial × 2^(n-1)`, at most `retry_max`, then scaled by a random factor in
    /// [0.5, 1) so that many gateways failing together do not retry together.
    fn backoff(&self, failures: u32) -> Duration {
        backoff(
            self.settings.retry_initial,
            self.settings.retry_max,
            failures,
            random_fraction(),
        )
    }

    /// [`AcmeManager::order`], started again at once when the CA rejected a nonce more often
    /// in a row than instant-acme retries (3): Pebble rejects 5% of them on purpose, and such
    /// a rejection says nothing about the CA's health.
    async fn order_surviving_nonces(
        &self,
        replacing: Option<&Issued>,
    ) -> Result<Issued, AcmeError> {
        let mut restarts = 0;
        loop {
            match self.order(replacing).await {
                Err(AcmeError::Ca {
                    problem_type: Some(kind),
                    ..
                }) if kind == BAD_NONCE && restarts < 3 => {
                    restarts += 1;
                    warn!(
                        restarts,
                        "The CA rejected nonces repeatedly; starting the order again"
                    );
                }
                result => return result,
            }
        }
    }
}

const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";

/// `initial × 2^(failures-1)`, at most `max`, scaled by `0.5 + fraction / 2` (fraction in
/// [0, 1)): exponential backoff with jitter that never waits less than half the step.
fn backoff(initial: Duration, max: Duration, failures: u32, fraction: f64) -> Duration {
    let step = initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    step.mul_f64(0.5 + fraction.clamp(0.0, 1.0) / 2.0)
}

/// Challenge answers put up for one order, taken down when it is settled either way.
struct PendingAnswers<'a> {
    store: &'a ChallengeStore,
    http01: Vec<String>,
    tls_alpn01: Vec<String>,
}

impl Drop for PendingAnswers<'_> {
    fn drop(&mut self) {
        for token in &self.http01 {
            self.store.remove_http01(token);
        }
        for name in &self.tls_alpn01 {
            self.store.remove_tls_alpn01(name);
        }
    }
}

/// Why an order did not become ready, from the failed challenge's problem document.
async fn validation_error(
    order: &mut Order,
    names: &str,
    outcome: Result<OrderStatus, instant_acme::Error>,
) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        let name = authz.identifier().to_string();
        if let Some(challenge) = authz.challenges.iter().find(|c| c.error.is_some()) {
            let problem = challenge.error.as_ref().map(describe_problem);
            return AcmeError::Validation {
                name,
                challenge: challenge_name(&challenge.r#type),
                detail: problem.unwrap_or_default(),
            };
        }
    }
    match outcome {
        Err(err) => AcmeError::ca(format!("waiting for the CA to validate {names}"), err),
        Ok(status) => AcmeError::Ca {
            step: format!("validating {names}"),
            detail: format!("the order became {status:?} and the CA gave no reason"),
            problem_type: None,
        },
    }
}

fn challenge_name(kind: &ChallengeType) -> String {
    match kind {
        ChallengeType::Http01 => "http-01".into(),
        ChallengeType::Dns01 => "dns-01".into(),
        ChallengeType::TlsAlpn01 => "tls-alpn-01".into(),
        ChallengeType::DeviceAttest01 => "device-attest-01".into(),
        ChallengeType::Unknown(other) => other.clone(),
        other => format!("{other:?}"),
    }
}

/// A uniform random number in [0, 1).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    // SystemRandom only fails when the kernel has no randomness to give; no jitter then.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Sleeps until a wall-clock time, in slices so that a clock jump is noticed.
async fn sleep_until(at: SystemTime) {
    loop {
        match at.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => tokio::time::sleep(left.min(SLEEP_SLICE)).await,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests;
