//! ACME in the real binary: certificates from a real Pebble over HTTP-01 on the gateway's own
//! HTTP listener, swapped in live, chosen by SNI, reused after a restart; and `check`.

mod common;
#[path = "../acme/tests/common/mod.rs"]
mod pebble;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check, get, h1, http_get, send, Process, TempDir, Upstream};
use edge_gateway_acme::CertificateInfo;
use pebble::Pebble;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Bounds on a hang: Pebble sleeps up to 15 s before each validation.
const ISSUE_LIMIT: Duration = Duration::from_secs(150);
const INSTALLED: &str = "Certificate installed; new handshakes get it";

fn acme_table(ca: &Pebble, storage: &Path) -> String {
    format!(
        "[acme]\ndirectory = {:?}\ndomains = [\"app.example.com\", \"www.example.com\"]\n\
         storage = {:?}\nca_bundle = {:?}\nretry_initial = \"2s\"\nretry_max = \"10s\"\n",
        ca.directory(),
        storage.display().to_string(),
        ca.tls_ca().display().to_string(),
    )
}

/// Waits for the `n`-th log line whose message is `message`; returns it parsed.
fn wait_for_line(gw: &Process, message: &str, n: usize, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let found: Vec<serde_json::Value> = gw
            .log()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect();
        if let Some(line) = found.into_iter().nth(n - 1) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no line #{n} {message:?} within {limit:?}; log:\n{}",
            gw.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TLS handshake as `name`, trusting only `root`; the stream and the served serial.
async fn connect(
    addr: std::net::SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
) -> Result<(TlsStream<TcpStream>, String), std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await?;
    let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
    let serial = CertificateInfo::from_der(leaf).unwrap().serial;
    Ok((tls, serial))
}

/// The serials of the certificates installed so far, in order.
fn installed(gw: &Process) -> Vec<String> {
    gw.log()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == INSTALLED)
        .filter_map(|v| v["serial"].as_str().map(str::to_owned))
        .collect()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_come_from_pebble_and_are_swapped_without_dropping_connections() {
    let dir = TempDir::new();
    let mut ca = Pebble::start(dir.path(), Some(60));
    let upstream = Upstream::start().await;
    let storage = dir.path().join("acme");
    let metrics_port = pebble::free_port();
    // The HTTP listener takes the port Pebble validates HTTP-01 on.
    let config = dir.write(
        "gateway.toml",
        &format!(
            "[listen]\nhttp = \"127.0.0.1:{}\"\nhttps = \"127.0.0.1:0\"\n\
             metrics = \"127.0.0.1:{metrics_port}\"\n\n[upstream]\nurl = {:?}\n\n\
             [log]\nformat = \"json\"\n\n{}",
            ca.http_port,
            upstream.url(),
            acme_table(&ca, &storage)
        ),
    );
    let (ok, _, stderr) = check(&config, &[]);
    assert!(ok, "{stderr}");

    let (gw, http, https) = Process::run(&config);
    wait_for_line(&gw, INSTALLED, 1, ISSUE_LIMIT);
    let first = installed(&gw)[0].clone();
    let root = ca.issuing_root();

    // Each configured name gets the certificate; a connection stays open across the swap.
    let (open, serial) = connect(https, "app.example.com", &root).await.unwrap();
    assert_eq!(serial, first);
    let mut kept = h1(open).await;
    assert_eq!(
        send(&mut kept, get("/")).await.text(),
        "hello from upstream"
    );
    let (_, serial) = connect(https, "www.example.com", &root).await.unwrap();
    assert_eq!(serial, first);

    // A name without a certificate gets an alert, and a log line names it.
    let err = connect(https, "unknown.example.com", &root)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AccessDenied"), "{err}");
    let refused = wait_for_line(
        &gw,
        "No certificate for this name; handshake refused",
        1,
        ISSUE_LIMIT,
    );
    assert_eq!(refused["tls.sni"], "unknown.example.com");

    // Only pending tokens are answered; the prefix is never redirected.
    let got = http_get(None, http, "/.well-known/acme-challenge/not-pending").await;
    assert_eq!(got.status, 404);

    // Renewal at two thirds of the 60 s lifetime: the open connection carries on, requests
    // going through it all along (an idle one would meet the header timeout), and new
    // handshakes get the new serial.
    let deadline = Instant::now() + ISSUE_LIMIT;
    let mut through_it = 0;
    let second = loop {
        if let Some(line) = installed(&gw).get(1) {
            break line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no renewal; log:\n{}",
            gw.log().join("\n")
        );
        let got = send(&mut kept, get("/")).await;
        assert_eq!(
            (got.status.as_u16(), got.text()),
            (200, "hello from upstream".into())
        );
        through_it += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_ne!(second, first);
    let got = send(&mut kept, get("/")).await;
    assert_eq!(got.status, 200);
    assert!(
        through_it > 10,
        "{through_it} requests on the kept connection"
    );
    let (_, serial) = connect(https, "app.example.com", &root).await.unwrap();
    assert_eq!(serial, second);

    let got = http_get(
        None,
        format!("127.0.0.1:{metrics_port}").parse().unwrap(),
        "/metrics",
    )
    .await;
    let text = got.text();
    let renewals = metric(
        &text,
        "edge_gateway_acme_renewals_total{result=\"success\"}",
    );
    assert!(renewals >= Some(2.0), "{text}");
    let expiry = "edge_gateway_certificate_expiry_timestamp_seconds{name=\"www.example.com\"}";
    assert!(metric(&text, expiry).is_some(), "{text}");

    // A restart with the CA gone serves the stored certificate at once: no new order.
    let mut gw = gw;
    gw.signal("TERM");
    assert!(gw.exited().await.success());
    let last = installed(&gw).last().unwrap().clone();
    ca.stop();
    let (gw, _, https) = Process::run(&config);
    let (_, serial) = connect(https, "www.example.com", &root).await.unwrap();
    assert_eq!(serial, last);
    let stored = wait_for_line(&gw, INSTALLED, 1, ISSUE_LIMIT);
    assert_eq!(stored["serial"], last.as_str());
    drop(upstream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_is_answered_on_the_https_listener() {
    let dir = TempDir::new();
    let ca = Pebble::start(dir.path(), None);
    let upstream = Upstream::start().await;
    // The HTTPS listener takes the port Pebble validates TLS-ALPN-01 on; nothing listens on
    // the HTTP-01 port, so only tls-alpn-01 can succeed.
    let config = dir.write(
        "gateway.toml",
        &format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:{}\"\n\n\
             [upstream]\nurl = {:?}\n\n[log]\nformat = \"json\"\n\n{}challenge = \"tls-alpn-01\"\n",
            ca.tls_port,
            upstream.url(),
            acme_table(&ca, &dir.path().join("acme"))
        ),
    );
    let (ok, _, stderr) = check(&config, &[]);
    assert!(ok, "{stderr}");
    let (gw, _, https) = Process::run(&config);
    let line = wait_for_line(&gw, INSTALLED, 1, ISSUE_LIMIT);
    let validation = wait_for_line(&gw, "TLS-ALPN-01 validation handshake", 1, ISSUE_LIMIT);
    assert_eq!(validation["answered"], true);
    let root = ca.issuing_root();
    let (_, serial) = connect(https, "app.example.com", &root).await.unwrap();
    assert_eq!(serial, line["serial"].as_str().unwrap());
    // An ordinary client never lands on the challenge protocol.
    let (tls, _) = connect(https, "www.example.com", &root).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn check_states_which_of_tls_and_acme_wins() {
    let dir = TempDir::new();
    let pki = common::Pki::new();
    let (cert, key) = pki.write(&dir);
    let storage = dir.path().join("acme");
    let bundle = dir.write("ca.pem", &pki.ca_pem);
    let base = "[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n\n\
                [upstream]\nurl = \"http://127.0.0.1:8000\"\n";
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let acme = format!(
        "[acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\ndomains = [\"app.example.com\"]\n\
         storage = {:?}\nca_bundle = {:?}\n",
        storage.display().to_string(),
        bundle.display().to_string()
    );
    let run = |text: String| {
        let file = dir.write("gateway.toml", &text);
        let (ok, out, err) = check(&file, &[]);
        (
            ok,
            format!("{out}{err}").replace(&file.display().to_string(), "FILE"),
        )
    };

    let (ok, out) = run(format!("{base}{acme}"));
    assert!(ok, "{out}");
    assert!(!out.contains("warning"), "{out}");

    let (ok, out) = run(format!("{base}{tls}{acme}"));
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "edge-gateway: FILE: warning: tls.cert, tls.key: ignored: [acme] is set, and the \
             certificate it gets is served for acme.domains"
        ),
        "{out}"
    );

    let (ok, out) = run(base.to_owned());
    assert!(!ok);
    assert!(
        out.contains("tls.cert: missing (the path of the PEM certificate chain (or set [acme]))"),
        "{out}"
    );

    let (ok, out) = run(format!(
        "{base}{}",
        acme.replace("app.example.com", "*.example.com")
    ));
    assert!(!ok);
    assert!(
        out.contains(
            "acme.domains: \"*.example.com\" is a wildcard, which only dns-01 can prove; use \
             explicit names"
        ),
        "{out}"
    );

    let (ok, out) = run(format!("{base}{acme}contacts = []\n"));
    assert!(!ok);
    assert!(out.contains("acme: unknown field `contacts`"), "{out}");

    std::fs::create_dir(&storage).unwrap();
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o750)).unwrap();
    let (ok, out) = run(format!("{base}{acme}"));
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "ACME storage {0} has mode 0750, which lets other users read the keys; it must be \
             0700; run: chmod 700 {0}",
            storage.display()
        )),
        "{out}"
    );
    // check creates nothing.
    std::fs::remove_dir(&storage).unwrap();
    let (ok, out) = run(format!("{base}{acme}"));
    assert!(ok, "{out}");
    assert!(!storage.exists());
}
