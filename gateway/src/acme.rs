//! ACME in the gateway: the `[acme]` manager runs beside the server, its HTTP-01 answers go out
//! on the HTTP listener, its certificates into the resolver by name, its events into metrics.
//!
//! The ACME client itself (ordering, renewal, storage) is the `edge-gateway-acme` crate; this
//! module only plugs it into the seams of the core.

use std::sync::Arc;

use bytes::Bytes;
use edge_gateway_acme::{AcmeError, AcmeEvent, AcmeManager, AcmeSettings, ChallengeStore, Issued};

use crate::metrics::{Metrics, Outcome};
use crate::tls::{AlpnChallenges, CertResolver};
use crate::ChallengeResponder;

/// Answers HTTP-01 from the manager's challenge store (an atomic load per request).
#[derive(Debug)]
pub struct StoreResponder(pub Arc<ChallengeStore>);

impl ChallengeResponder for StoreResponder {
    fn respond(&self, token: &str) -> Option<Bytes> {
        self.0
            .http01(token)
            .map(|answer| Bytes::copy_from_slice(answer.as_bytes()))
    }
}

/// Answers TLS-ALPN-01 from the same store (an atomic load per validation handshake).
#[derive(Debug)]
pub struct AlpnResponder(pub Arc<ChallengeStore>);

impl AlpnChallenges for AlpnResponder {
    fn certificate(&self, name: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.tls_alpn01(name)
    }
}

/// The ACME manager, prepared but not yet running.
pub struct Acme {
    manager: AcmeManager,
    store: Arc<ChallengeStore>,
    names: Vec<String>,
    certs: Arc<CertResolver>,
    metrics: Arc<Metrics>,
}

impl Acme {
    /// Opens the storage and installs the stored certificate (when valid for every name), so
    /// that it is in the resolver before the first handshake.
    pub fn new(
        settings: AcmeSettings,
        certs: Arc<CertResolver>,
        metrics: Arc<Metrics>,
    ) -> Result<Acme, AcmeError> {
        let store = ChallengeStore::new();
        let names = settings.names();
        if settings.challenge == edge_gateway_acme::ChallengeKind::TlsAlpn01 {
            certs.set_alpn_challenges(Arc::new(AlpnResponder(store.clone())));
        }
        let manager = AcmeManager::new(settings, store.clone())?;
        let acme = Acme {
            manager,
            store,
            names,
            certs,
            metrics,
        };
        if let Some(stored) = acme.manager.current().get() {
            install(&acme.certs, &acme.names, &stored);
        }
        Ok(acme)
    }

    /// The HTTP-01 responder for [`crate::Hooks::challenges`].
    pub fn responder(&self) -> Arc<dyn ChallengeResponder> {
        Arc::new(StoreResponder(self.store.clone()))
    }

    /// Starts ordering and renewing; call once the HTTP listener is bound, since the CA may
    /// validate as soon as a challenge is announced. Must run inside the tokio runtime.
    pub fn spawn(self) {
        tokio::spawn(record_events(self.manager.subscribe(), self.metrics));
        let (certs, names) = (self.certs, self.names);
        self.manager
            .spawn(move |issued: &Issued| install(&certs, &names, issued));
    }
}

/// Every configured name gets the certificate; the swap applies from the next handshake, and
/// connections already open keep the one they were given.
fn install(certs: &CertResolver, names: &[String], issued: &Issued) {
    for name in names {
        certs.install(name, issued.certified_key.clone());
    }
    tracing::info!(
        names = %names.join(","),
        serial = %issued.info.serial,
        "Certificate installed; new handshakes get it"
    );
}

async fn record_events(
    mut events: tokio::sync::broadcast::Receiver<AcmeEvent>,
    metrics: Arc<Metrics>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "ACME events missed by the metrics");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        match event.renewal_result() {
            Some("success") => metrics.acme_renewal(Outcome::Success),
            Some(_) => metrics.acme_renewal(Outcome::Failure),
            None => {}
        }
        if let AcmeEvent::Installed { info, .. } = &event {
            for name in &info.names {
                metrics.certificate_expiry(name, info.not_after);
            }
            metrics.retain_certificates(info.names.iter().map(String::as_str));
        }
    }
}
