//! A real Pebble on loopback, with pebble-challtestsrv as its DNS, and a real HTTP-01 responder.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edge_gateway_acme::{AcmeEvent, AcmeSettings, ChallengeStore, Http01Lookup};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A directory under the system's temporary directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "edge-acme-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port}; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pebble and its DNS, with their own TLS certificate for the ACME directory.
pub struct Pebble {
    dir: PathBuf,
    pub acme_port: u16,
    pub management_port: u16,
    /// The port Pebble sends HTTP-01 validations to.
    pub http_port: u16,
    /// The port Pebble sends TLS-ALPN-01 validations to.
    pub tls_port: u16,
    pub dns_port: u16,
    pebble: Option<Child>,
    dns: Child,
}

impl Pebble {
    /// Starts Pebble issuing certificates valid for `validity` seconds; its nonce rejections
    /// and validation sleeps stay at their defaults.
    pub fn start(dir: &Path, validity: Option<u64>) -> Self {
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        std::fs::write(dir.join("tls-ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("tls-cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("tls-key.pem"), leaf_key.serialize_pem()).unwrap();

        let (acme_port, management_port, http_port, tls_port, dns_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let validity = validity
            .map(|v| format!(",\n    \"certificateValidityPeriod\": {v}"))
            .unwrap_or_default();
        std::fs::write(
            dir.join("pebble-config.json"),
            format!(
                r#"{{
  "pebble": {{
    "listenAddress": "127.0.0.1:{acme_port}",
    "managementListenAddress": "127.0.0.1:{management_port}",
    "certificate": "{tls}/tls-cert.pem",
    "privateKey": "{tls}/tls-key.pem",
    "httpPort": {http_port},
    "tlsPort": {tls_port},
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false{validity}
  }}
}}
"#,
                tls = dir.display(),
            ),
        )
        .unwrap();

        // Every name resolves to 127.0.0.1 and nothing else, so that Pebble validates against
        // the test's responder; the challenge servers of challtestsrv itself stay off.
        let dns_log = std::fs::File::create(dir.join("challtestsrv.log")).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(dns_log.try_clone().unwrap())
            .stderr(dns_log)
            .spawn()
            .expect("pebble-challtestsrv runs (Debian package pebble)");
        let mut pebble = Self {
            dir,
            acme_port,
            management_port,
            http_port,
            tls_port,
            dns_port,
            pebble: None,
            dns,
        };
        pebble.resume();
        pebble
    }

    /// Starts Pebble again on the same ports (it comes back with no state and a new root).
    pub fn resume(&mut self) {
        assert!(self.pebble.is_none(), "Pebble is already running");
        let log = self.log_file();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.join("pebble-config.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            .args(["-strict=false"])
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .env_remove("PEBBLE_VA_NOSLEEP")
            .env_remove("PEBBLE_WFE_NONCEREJECT")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("pebble runs (Debian package pebble)");
        self.pebble = Some(child);
        wait_for_port(self.acme_port, "pebble", &log);
        wait_for_port(self.management_port, "pebble management", &log);
    }

    /// Stops Pebble (its DNS stays up).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    pub fn tls_ca(&self) -> PathBuf {
        self.dir.join("tls-ca.pem")
    }

    /// Where Pebble writes its log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("pebble.log")
    }

    /// The root that signs the certificates Pebble issues now.
    pub fn issuing_root(&self) -> CertificateDer<'static> {
        // The management interface serves a self-signed certificate of Pebble's own making;
        // this is loopback to a process the test started, and the root it returns is then
        // checked by the handshakes it verifies.
        let out = Command::new("curl")
            .args(["-sSfk"])
            .arg(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        CertificateDer::from_pem_slice(&out.stdout).unwrap()
    }

    /// Settings for this Pebble, names resolved by its DNS to 127.0.0.1.
    pub fn settings(&self, domains: &[&str], storage: &Path) -> AcmeSettings {
        let mut s = AcmeSettings::new(&self.directory(), domains, storage);
        s.ca_bundle = Some(self.tls_ca());
        s.contact = vec!["mailto:ops@example.com".to_owned()];
        s.retry_initial = Duration::from_secs(2);
        s.retry_max = Duration::from_secs(10);
        s
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

/// The HTTP-01 responder: the crate's challenge store served by hyper on `port`, counting the
/// validation requests it answered.
pub struct Responder {
    pub answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve_http01(port: u16, store: Arc<ChallengeStore>) -> Responder {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let answer = store.http01_lookup(req.uri().path());
                    let response = match answer {
                        Http01Lookup::Answer(body) => {
                            counter.fetch_add(1, Ordering::SeqCst);
                            Response::new(Full::new(Bytes::from(body.to_string())))
                        }
                        _ => {
                            let mut r = Response::new(Full::new(Bytes::from_static(b"no\n")));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            r
                        }
                    };
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Responder { answered, task }
}

/// Waits for the first event that `pick` accepts, skipping others; panics with Pebble's log
/// (`pebble_log`, see [`Pebble::log_file`]) after `limit` (a bound on a hang, not a
/// measurement).
pub async fn next_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<AcmeEvent>,
    limit: Duration,
    pebble_log: &Path,
    mut pick: impl FnMut(&AcmeEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            let event = events.recv().await.expect("manager alive");
            eprintln!("event: {event:?}");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    };
    match tokio::time::timeout(limit, wait).await {
        Ok(found) => found,
        Err(_) => panic!(
            "no such event within {limit:?}; Pebble log:\n{}",
            std::fs::read_to_string(pebble_log).unwrap_or_default()
        ),
    }
}

/// What the captures listen to.
const CAPTURED: &str = "edge_gateway_acme=debug";

/// A tracing subscriber for this thread that keeps what it writes, for assertions on logs.
///
/// tracing caches, once per process, whether anyone listens at each log call site, asking
/// the subscriber of whichever thread gets there first. A test without a capture on another
/// thread would answer "no one" and silence the site for the capturing test too; a global
/// subscriber that listens to the same events (and writes them nowhere) keeps that answer
/// "someone" on every thread.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        static LISTENING_EVERYWHERE: std::sync::Once = std::sync::Once::new();
        LISTENING_EVERYWHERE.call_once(|| {
            let everywhere = tracing_subscriber::fmt()
                .with_env_filter(CAPTURED)
                .with_writer(std::io::sink)
                .finish();
            tracing::subscriber::set_global_default(everywhere)
                .expect("no other global subscriber in the ACME tests");
            // Sites another thread reached before this point were cached as silent.
            tracing::callsite::rebuild_interest_cache();
        });

        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(CAPTURED)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        // Also to stderr, so a failing test shows what the manager said.
        std::io::Write::write_all(&mut std::io::stderr(), buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serves `key` over a real TLS handshake on loopback and connects to it as `name`, trusting
/// only `root`; returns the leaf the client verified.
pub async fn handshake_verifies(
    key: Arc<rustls::sign::CertifiedKey>,
    root: CertificateDer<'static>,
    name: &str,
) -> Result<CertificateDer<'static>, String> {
    #[derive(Debug)]
    struct One(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for One {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(One(key)));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let result = connector.connect(server_name, tcp).await;
    serve.abort();
    let tls = result.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok(leaf.into_owned())
}
