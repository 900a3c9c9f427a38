//! The ACME client against a real Pebble on loopback, answering HTTP-01 from its own store.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{
    handshake_verifies, next_event, serve_http01, LogCapture, Pebble, Responder, Scratch,
};
use edge_gateway_acme::{
    AcmeEvent, AcmeManager, CertificateInfo, CertificateSource, ChallengeStore, Issued,
};

const NAMES: [&str; 2] = ["app.example.com", "www.example.com"];
/// Bounds on a hang: Pebble sleeps up to 15 s before each validation.
const ISSUE_LIMIT: Duration = Duration::from_secs(150);

/// Pebble in a scratch directory, and the HTTP-01 responder it validates against.
struct TestCa {
    // In drop order: the responder and Pebble stop before their directory goes.
    responder: Responder,
    pebble: Pebble,
    /// What the responder answers from.
    store: Arc<ChallengeStore>,
    scratch: Scratch,
}

impl TestCa {
    /// `validity`: how many seconds Pebble's certificates are valid (None: its default).
    async fn start(tag: &str, validity: Option<u64>) -> TestCa {
        let scratch = Scratch::new(tag);
        let pebble = Pebble::start(&scratch.0, validity);
        let store = ChallengeStore::new();
        let responder = serve_http01(pebble.http_port, store.clone()).await;
        TestCa {
            responder,
            pebble,
            store,
            scratch,
        }
    }

    /// Where the manager keeps its account and certificate.
    fn storage(&self) -> PathBuf {
        self.scratch.0.join("acme")
    }

    /// A manager ordering `names` from this Pebble, its challenges answered by the responder.
    fn manager(&self, names: &[&str]) -> AcmeManager {
        let settings = self.pebble.settings(names, &self.storage());
        AcmeManager::new(settings, self.store.clone()).unwrap()
    }
}

/// Records what the manager hands to the gateway.
#[derive(Clone, Default)]
struct Installs(Arc<Mutex<Vec<Issued>>>);

impl Installs {
    fn callback(&self) -> impl Fn(&Issued) + Send + Sync + 'static {
        let list = self.0.clone();
        move |issued| list.lock().unwrap().push(issued.clone())
    }
    fn serials(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|i| i.info.serial.clone())
            .collect()
    }
    fn last(&self) -> Issued {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

/// A spawned manager: the events it reports and what it installs. Its task is aborted on drop.
struct Running {
    events: tokio::sync::broadcast::Receiver<AcmeEvent>,
    installs: Installs,
    task: tokio::task::JoinHandle<()>,
    /// Shown when an awaited event does not come.
    pebble_log: PathBuf,
}

impl Running {
    fn spawn(manager: AcmeManager, pebble: &Pebble) -> Running {
        let events = manager.subscribe();
        let installs = Installs::default();
        let task = manager.spawn(installs.callback());
        Running {
            events,
            installs,
            task,
            pebble_log: pebble.log_file(),
        }
    }

    /// The first event that `pick` accepts, the others skipped.
    async fn next<T>(&mut self, pick: impl FnMut(&AcmeEvent) -> Option<T>) -> T {
        next_event(&mut self.events, ISSUE_LIMIT, &self.pebble_log, pick).await
    }

    /// The next certificate issued by the CA and installed.
    async fn issued(&mut self) -> CertificateInfo {
        self.next(|e| match e {
            AcmeEvent::Installed {
                info,
                source: CertificateSource::Issued,
            } => Some(info.clone()),
            _ => None,
        })
        .await
    }

    /// The next renewal scheduled: when, and why then.
    async fn renewal_scheduled(&mut self) -> (SystemTime, &'static str) {
        self.next(|e| match e {
            AcmeEvent::RenewalScheduled { at, reason } => Some((*at, *reason)),
            _ => None,
        })
        .await
    }

    /// The next failed order: its error, and how long until the retry.
    async fn order_failed(&mut self) -> (String, Duration) {
        self.next(|e| match e {
            AcmeEvent::OrderFailed {
                error, retry_in, ..
            } => Some((error.clone(), *retry_in)),
            _ => None,
        })
        .await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn issues_a_certificate_that_verifies_against_pebbles_root() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let ca = TestCa::start("issue", None).await;
    let manager = ca.manager(&NAMES);
    assert!(manager.current().get().is_none());
    let mut run = Running::spawn(manager, &ca.pebble);

    let info = run.issued().await;
    assert_eq!(info.names, NAMES.to_vec());
    assert!(
        ca.responder.answered.load(Ordering::SeqCst) >= 1,
        "Pebble fetched no token"
    );
    // The answers came down once the order was settled.
    assert_eq!(
        format!("{:?}", ca.store),
        "ChallengeStore { http01_pending: 0, tls_alpn01_pending: 0 }"
    );

    let issued = run.installs.last();
    assert_eq!(issued.info, info);
    let root = ca.pebble.issuing_root();
    for name in NAMES {
        let leaf = handshake_verifies(issued.certified_key.clone(), root.clone(), name)
            .await
            .unwrap();
        assert_eq!(
            CertificateInfo::from_der(&leaf).unwrap().serial,
            info.serial
        );
    }
    let err = handshake_verifies(issued.certified_key.clone(), root, "other.example.com")
        .await
        .unwrap_err();
    assert!(
        err.contains("not valid for name \"other.example.com\""),
        "{err}"
    );

    let storage = ca.storage();
    for file in ["account.pem", "certificate.pem"] {
        let mode = std::fs::metadata(storage.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let mode = std::fs::metadata(&storage).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);

    // The renewal is logged once scheduled, after the certificate went in.
    run.renewal_scheduled().await;
    let text = logs.text();
    for step in [
        "Order created for app.example.com,www.example.com",
        "Challenge ready: http-01 for app.example.com",
        "Challenge ready: http-01 for www.example.com",
        "Validated app.example.com,www.example.com",
        &format!("Certificate issued, serial {}", info.serial),
        "Renewal due at",
    ] {
        assert!(text.contains(step), "log lacks {step:?}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn renews_a_short_lived_certificate_at_two_thirds_of_its_lifetime() {
    let ca = TestCa::start("renew", Some(60)).await;
    let mut run = Running::spawn(ca.manager(&NAMES[..1]), &ca.pebble);

    let first = run.issued().await;
    // Pebble's notAfter is the last second of validity: 60 s of validity, 59 s apart.
    assert_eq!(first.lifetime(), Duration::from_secs(59), "{first:?}");
    let due = run.renewal_scheduled().await;
    let two_thirds = first.not_before + Duration::from_secs(59) * 2 / 3;
    assert_eq!(due, (two_thirds, "two thirds of the lifetime"));

    let second = run.issued().await;
    assert_ne!(second.serial, first.serial);
    assert!(SystemTime::now() >= due.0, "renewed before it was due");
    assert!(second.not_after > first.not_after);
    assert_eq!(run.installs.serials(), vec![first.serial, second.serial]);
}

#[tokio::test(flavor = "current_thread")]
async fn keeps_the_certificate_while_pebble_is_down_and_renews_when_it_is_back() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let mut ca = TestCa::start("outage", Some(60)).await;
    let manager = ca.manager(&NAMES[..1]);
    let current = manager.current();
    let mut run = Running::spawn(manager, &ca.pebble);

    let first = run.issued().await;
    ca.pebble.stop();

    // Renewal comes due with the CA down: the error is reported, a retry is scheduled, and the
    // certificate in use stays.
    let (error, retry_in) = run.order_failed().await;
    let directory = ca.pebble.directory();
    assert!(
        error.starts_with(&format!("ACME directory {directory}: no answer: ")),
        "{error}"
    );
    assert!(error.contains("Connection refused"), "{error}");
    assert!(retry_in >= Duration::from_secs(1) && retry_in <= Duration::from_secs(2));
    assert_eq!(current.get().unwrap().info.serial, first.serial);
    assert_eq!(run.installs.serials(), vec![first.serial.clone()]);
    let text = logs.text();
    assert!(
        text.contains(&format!("keeping serial {} (valid until", first.serial)),
        "{text}"
    );
    assert!(text.contains("retrying in"), "{text}");

    // Back up (a fresh Pebble, which forgot the account): the next retry succeeds.
    ca.pebble.resume();
    let second = run.issued().await;
    assert_ne!(second.serial, first.serial);
    assert_eq!(current.get().unwrap().info.serial, second.serial);
    let root = ca.pebble.issuing_root();
    handshake_verifies(run.installs.last().certified_key, root, NAMES[0])
        .await
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_restart_reuses_the_stored_certificate_without_a_new_order() {
    let mut ca = TestCa::start("restart", None).await;
    let mut run = Running::spawn(ca.manager(&NAMES), &ca.pebble);
    let first = run.issued().await;
    drop(run);
    let account = ca.storage().join("account.pem");
    let account_key = std::fs::read(&account).unwrap();

    // With the CA gone, only the stored certificate can explain a certificate at start.
    ca.pebble.stop();
    let manager = ca.manager(&NAMES);
    assert_eq!(manager.current().get().unwrap().info.serial, first.serial);
    let mut run = Running::spawn(manager, &ca.pebble);
    let loaded = run.next(|e| Some(e.clone())).await;
    assert!(
        matches!(&loaded, AcmeEvent::Installed { info, source: CertificateSource::Stored }
            if info.serial == first.serial),
        "{loaded:?}"
    );
    let scheduled = run.next(|e| Some(e.clone())).await;
    match scheduled {
        AcmeEvent::RenewalScheduled { at, .. } => assert!(at > SystemTime::now() + ISSUE_LIMIT),
        other => panic!("expected the renewal to be scheduled, got {other:?}"),
    }
    assert_eq!(run.installs.serials(), vec![first.serial]);
    assert_eq!(std::fs::read(&account).unwrap(), account_key);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_validation_names_the_name_the_challenge_and_the_cas_words() {
    let scratch = Scratch::new("refused");
    let pebble = Pebble::start(&scratch.0, None);
    // No responder on Pebble's validation port: the CA cannot connect.
    let settings = pebble.settings(&NAMES[..1], &scratch.0.join("acme"));
    let manager = AcmeManager::new(settings, ChallengeStore::new()).unwrap();
    let (error, _) = Running::spawn(manager, &pebble).order_failed().await;
    let port = pebble.http_port;
    assert!(
        error.starts_with("the CA could not validate http-01 for app.example.com: "),
        "{error}"
    );
    assert!(
        error.contains(&format!("127.0.0.1:{port}")) && error.contains("connection refused"),
        "{error}"
    );
    assert!(
        error.ends_with("(urn:ietf:params:acme:error:connection)"),
        "{error}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_storage_permissions_are_refused_with_the_path() {
    let scratch = Scratch::new("perms");
    let storage = scratch.0.join("acme");
    std::fs::create_dir(&storage).unwrap();
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings =
        edge_gateway_acme::AcmeSettings::new("https://127.0.0.1:1/dir", &NAMES, storage.clone());
    let expected = format!(
        "ACME storage {0} has mode 0755, which lets other users read the keys; it must be \
         0700; run: chmod 700 {0}",
        storage.display()
    );
    assert_eq!(
        AcmeManager::check(&settings).unwrap_err().to_string(),
        expected
    );
    let err = AcmeManager::new(settings, ChallengeStore::new()).unwrap_err();
    assert_eq!(err.to_string(), expected);
}

#[tokio::test(flavor = "current_thread")]
async fn a_bad_directory_url_says_what_answered() {
    let scratch = Scratch::new("baddir");
    let pebble = Pebble::start(&scratch.0, None);
    let cases = [
        // Nothing listens there.
        (
            format!("https://127.0.0.1:{}/dir", common::free_port()),
            "no answer: client error (Connect): tcp connect error: Connection refused (os \
             error 111)",
        ),
        // Pebble answers, but not with a directory.
        (
            format!("https://127.0.0.1:{}/directory", pebble.acme_port),
            "answered HTTP 404 Not Found, not a directory; check acme.directory",
        ),
    ];
    for (i, (url, detail)) in cases.into_iter().enumerate() {
        let mut settings = pebble.settings(&NAMES, &scratch.0.join(format!("acme{i}")));
        settings.directory = url.clone();
        let manager = AcmeManager::new(settings, ChallengeStore::new()).unwrap();
        let (error, _) = Running::spawn(manager, &pebble).order_failed().await;
        assert_eq!(error, format!("ACME directory {url}: {detail}"));
    }

    // A URL that is no https:// URL is refused before anything is sent.
    let mut settings = pebble.settings(&NAMES, &scratch.0.join("acme"));
    settings.directory = "http://127.0.0.1:14000/dir".into();
    assert_eq!(
        AcmeManager::check(&settings).unwrap_err().to_string(),
        "acme.directory: \"http://127.0.0.1:14000/dir\" is not an https:// URL; ACME \
         directories are served over HTTPS"
    );
}
