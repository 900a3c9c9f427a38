//! The ACME client against a real Pebble on loopback, answering HTTP-01 from its own store.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{handshake_verifies, next_event, serve_http01, LogCapture, Pebble, Scratch};
use edge_gateway_acme::{
    AcmeEvent, AcmeManager, CertificateInfo, CertificateSource, ChallengeStore, Issued,
};

const NAMES: [&str; 2] = ["app.example.com", "www.example.com"];
/// Bounds on a hang: Pebble sleeps up to 15 s before each validation.
const ISSUE_LIMIT: Duration = Duration::from_secs(150);

fn installed(source: CertificateSource) -> impl FnMut(&AcmeEvent) -> Option<CertificateInfo> {
    move |e| match e {
        AcmeEvent::Installed { info, source: s } if *s == source => Some(info.clone()),
        _ => None,
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

#[tokio::test(flavor = "current_thread")]
async fn issues_a_certificate_that_verifies_against_pebbles_root() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let scratch = Scratch::new("issue");
    let pebble = Pebble::start(&scratch.0, None);
    let store = ChallengeStore::new();
    let responder = serve_http01(pebble.http_port, store.clone()).await;
    let storage = scratch.0.join("acme");
    let manager = AcmeManager::new(pebble.settings(&NAMES, &storage), store.clone()).unwrap();
    assert!(manager.current().get().is_none());
    let mut events = manager.subscribe();
    let installs = Installs::default();
    let task = manager.spawn(installs.callback());

    let info = next_event(
        &mut events,
        ISSUE_LIMIT,
        &pebble,
        installed(CertificateSource::Issued),
    )
    .await;
    assert_eq!(info.names, NAMES.to_vec());
    assert!(
        responder.answered.load(Ordering::SeqCst) >= 1,
        "Pebble fetched no token"
    );
    // The answers came down once the order was settled.
    assert_eq!(
        format!("{store:?}"),
        "ChallengeStore { http01_pending: 0, tls_alpn01_pending: 0 }"
    );

    let issued = installs.last();
    assert_eq!(issued.info, info);
    let root = pebble.issuing_root();
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
    next_event(&mut events, ISSUE_LIMIT, &pebble, |e| match e {
        AcmeEvent::RenewalScheduled { .. } => Some(()),
        _ => None,
    })
    .await;
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
    task.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn renews_a_short_lived_certificate_at_two_thirds_of_its_lifetime() {
    let scratch = Scratch::new("renew");
    let pebble = Pebble::start(&scratch.0, Some(60));
    let store = ChallengeStore::new();
    let _responder = serve_http01(pebble.http_port, store.clone()).await;
    let manager =
        AcmeManager::new(pebble.settings(&NAMES[..1], &scratch.0.join("acme")), store).unwrap();
    let mut events = manager.subscribe();
    let installs = Installs::default();
    let task = manager.spawn(installs.callback());

    let first = next_event(
        &mut events,
        ISSUE_LIMIT,
        &pebble,
        installed(CertificateSource::Issued),
    )
    .await;
    // Pebble's notAfter is the last second of validity: 60 s of validity, 59 s apart.
    assert_eq!(first.lifetime(), Duration::from_secs(59), "{first:?}");
    let due = next_event(&mut events, ISSUE_LIMIT, &pebble, |e| match e {
        AcmeEvent::RenewalScheduled { at, reason } => Some((*at, *reason)),
        _ => None,
    })
    .await;
    let two_thirds = first.not_before + Duration::from_secs(59) * 2 / 3;
    assert_eq!(due, (two_thirds, "two thirds of the lifetime"));

    let second = next_event(
        &mut events,
        ISSUE_LIMIT,
        &pebble,
        installed(CertificateSource::Issued),
    )
    .await;
    assert_ne!(second.serial, first.serial);
    assert!(SystemTime::now() >= due.0, "renewed before it was due");
    assert!(second.not_after > first.not_after);
    assert_eq!(installs.serials(), vec![first.serial, second.serial]);
    task.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn keeps_the_certificate_while_pebble_is_down_and_renews_when_it_is_back() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let scratch = Scratch::new("outage");
    let mut pebble = Pebble::start(&scratch.0, Some(60));
    let store = ChallengeStore::new();
    let _responder = serve_http01(pebble.http_port, store.clone()).await;
    let manager =
        AcmeManager::new(pebble.settings(&NAMES[..1], &scratch.0.join("acme")), store).unwrap();
    let current = manager.current();
    let mut events = manager.subscribe();
    let installs = Installs::default();
    let task = manager.spawn(installs.callback());

    let first = next_event(
        &mut events,
        ISSUE_LIMIT,
        &pebble,
        installed(CertificateSource::Issued),
    )
    .await;
    pebble.stop();

    // Renewal comes due with the CA down: the error is reported, a retry is scheduled, and the
    // certificate in use stays.
    let (error, retry_in) = next_event(&mut events, ISSUE_LIMIT, &pebble, |e| match e {
        AcmeEvent::OrderFailed {
            error, retry_in, ..
        } => Some((error.clone(), *retry_in)),
        _ => None,
    })
    .await;
    let directory = pebble.directory();
    assert!(
        error.starts_with(&format!("ACME directory {directory}: no answer: ")),
        "{error}"
    );
    assert!(error.contains("Connection refused"), "{error}");
    assert!(retry_in >= Duration::from_secs(1) && retry_in <= Duration::from_secs(2));
    assert_eq!(current.get().unwrap().info.serial, first.serial);
    assert_eq!(installs.serials(), vec![first.serial.clone()]);
    let text = logs.text();
    assert!(
        text.contains(&format!("keeping serial {} (valid until", first.serial)),
        "{text}"
    );
    assert!(text.contains("retrying in"), "{text}");

    // Back up (a fresh Pebble, which forgot the account): the next retry succeeds.
    pebble.resume();
    let second = next_event(
        &mut events,
        ISSUE_LIMIT,
        &pebble,
        installed(CertificateSource::Issued),
    )
    .await;
    assert_ne!(second.serial, first.serial);
    assert_eq!(current.get().unwrap().info.serial, second.serial);
    let root = pebble.issuing_root();
    handshake_verifies(installs.last().certified_key, root, NAMES[0])
        .await
        .unwrap();
    task.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn a_restart_reuses_the_stored_certificate_without_a_new_order() {
    let scratch = Scratch::new("restart");
    let mut pebble = Pebble::start(&scratch.0, None);
    let store = ChallengeStore::new();
    let _responder = serve_http01(pebble.http_port, store.clone()).await;
    let storage = scratch.0.join("acme");
    let settings = pebble.settings(&NAMES, &storage);
    let manager = AcmeManager::new(settings.clone(), store.clone()).unwrap();
    let mut events = manager.subscribe();
    let task = manager.spawn(|_| {});
    let first = next_event(
        &mut events,
        ISSUE_LIMIT,
        &pebble,
        installed(CertificateSource::Issued),
    )
    .await;
    task.abort();
    let account_key = std::fs::read(storage.join("account.pem")).unwrap();

    // With the CA gone, only the stored certificate can explain a certificate at start.
    pebble.stop();
    let manager = AcmeManager::new(settings, store).unwrap();
    assert_eq!(manager.current().get().unwrap().info.serial, first.serial);
    let mut events = manager.subscribe();
    let installs = Installs::default();
    let task = manager.spawn(installs.callback());
    let loaded = next_event(&mut events, ISSUE_LIMIT, &pebble, |e| Some(e.clone())).await;
    assert!(
        matches!(&loaded, AcmeEvent::Installed { info, source: CertificateSource::Stored }
            if info.serial == first.serial),
        "{loaded:?}"
    );
    let scheduled = next_event(&mut events, ISSUE_LIMIT, &pebble, |e| Some(e.clone())).await;
    match scheduled {
        AcmeEvent::RenewalScheduled { at, .. } => assert!(at > SystemTime::now() + ISSUE_LIMIT),
        other => panic!("expected the renewal to be scheduled, got {other:?}"),
    }
    assert_eq!(installs.serials(), vec![first.serial]);
    assert_eq!(
        std::fs::read(storage.join("account.pem")).unwrap(),
        account_key
    );
    task.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_validation_names_the_name_the_challenge_and_the_cas_words() {
    let scratch = Scratch::new("refused");
    let pebble = Pebble::start(&scratch.0, None);
    // No responder on Pebble's validation port: the CA cannot connect.
    let manager = AcmeManager::new(
        pebble.settings(&NAMES[..1], &scratch.0.join("acme")),
        ChallengeStore::new(),
    )
    .unwrap();
    let mut events = manager.subscribe();
    let task = manager.spawn(|_| {});
    let error = next_event(&mut events, ISSUE_LIMIT, &pebble, |e| match e {
        AcmeEvent::OrderFailed { error, .. } => Some(error.clone()),
        _ => None,
    })
    .await;
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
    task.abort();
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
        let mut events = manager.subscribe();
        let task = manager.spawn(|_| {});
        let error = next_event(&mut events, ISSUE_LIMIT, &pebble, |e| match e {
            AcmeEvent::OrderFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .await;
        assert_eq!(error, format!("ACME directory {url}: {detail}"));
        task.abort();
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
