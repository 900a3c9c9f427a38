//! Shared parts of the integration tests (the operations suite takes them through its
//! harness): certificates made with rcgen, a real upstream server, the gateway in-process or
//! as the real binary, and real TLS and HTTP clients.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::SupportedProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use edge_gateway::tls::CertResolver;
use edge_gateway::{Hooks, Server, Settings};

/// Bounds every wait in the tests, so a hang fails instead of blocking. A bound on failure,
/// not a measurement: nothing asserts how fast anything happened.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The name the test certificates are for.
pub const NAME: &str = "localhost";

/// A port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edge-gateway-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA made for the test, and the leaf it issued first: for [`NAME`], 127.0.0.1 and ::1.
pub struct Pki {
    pub ca_der: CertificateDer<'static>,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate the test CA issued, and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    /// notAfter, in seconds since 1970.
    pub not_after: i64,
}

/// Signs `params` with a new key.
fn issue(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    params: rcgen::CertificateParams,
) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
        not_after: params.not_after.unix_timestamp(),
    }
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "edge-gateway test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let names = vec![NAME.to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        let first = issue(&issuer, rcgen::CertificateParams::new(names).unwrap());
        Pki {
            ca_der: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            cert_pem: first.cert_pem,
            key_pem: first.key_pem,
            issuer,
        }
    }

    /// A new leaf for [`NAME`] alone, with a new key, expiring on `year`-01-01.
    pub fn leaf(&self, year: i32) -> Leaf {
        let mut params = rcgen::CertificateParams::new(vec![NAME.to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        issue(&self.issuer, params)
    }

    /// Writes `cert.pem` and `key.pem` into `dir`.
    pub fn write(&self, dir: &TempDir) -> (PathBuf, PathBuf) {
        (
            dir.write("cert.pem", &self.cert_pem),
            dir.write("key.pem", &self.key_pem),
        )
    }

    /// A client configuration trusting the test CA, offering `versions` and `alpn`.
    pub fn client_config(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A connector with [`Pki::client_config`].
    pub fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> TlsConnector {
        TlsConnector::from(Arc::new(self.client_config(versions, alpn)))
    }

    /// TLS 1.2 and 1.3, HTTP/1.1 only.
    pub fn h1_client(&self) -> TlsConnector {
        self.client(rustls::ALL_VERSIONS, &[b"http/1.1"])
    }
}

/// What the upstream saw of a request, as it echoes it back from `/headers`.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Seen {
    pub fn parse(body: &[u8]) -> Seen {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        let mut headers = BTreeMap::new();
        for (k, vals) in v["headers"].as_object().unwrap() {
            let vals = vals
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            headers.insert(k.clone(), vals);
        }
        Seen {
            method: v["method"].as_str().unwrap().to_string(),
            uri: v["uri"].as_str().unwrap().to_string(),
            headers,
        }
    }

    /// The one value of `name`, or None.
    pub fn one(&self, name: &str) -> Option<&str> {
        let v = self.headers.get(name)?;
        assert_eq!(v.len(), 1, "{name} sent {} times: {v:?}", v.len());
        Some(v[0].as_str())
    }
}

/// A real HTTP/1.1 upstream on loopback.
///
/// - `/headers`: answers JSON with the method, target and headers it received.
/// - `/slow`: answers after three seconds.
/// - `/hold`: reports on `held` that it started, answers once `release` is notified.
/// - `/upgrade`: answers 101 and echoes bytes on the upgraded connection.
/// - `/count`: reads the whole body and answers its length.
/// - anything else: `hello from upstream`.
pub struct Upstream {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    pub held: tokio::sync::mpsc::UnboundedReceiver<()>,
    pub release: Arc<tokio::sync::Notify>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let (tx, held) = tokio::sync::mpsc::unbounded_channel();
        let (count, rel) = (connections.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (tx, rel) = (tx.clone(), rel.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        upstream_route(req, tx.clone(), rel.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            connections,
            held,
            release,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn upstream_route(
    mut req: Request<Incoming>,
    held: tokio::sync::mpsc::UnboundedSender<()>,
    release: Arc<tokio::sync::Notify>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let text = |s: &str| Response::new(Full::new(Bytes::from(s.to_string())));
    match req.uri().path() {
        "/headers" => {
            let mut headers = serde_json::Map::new();
            for name in req.headers().keys() {
                let vals: Vec<serde_json::Value> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
                    .collect();
                headers.insert(name.as_str().to_string(), vals.into());
            }
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "headers": headers,
            });
            Ok(text(&body.to_string()))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(text("slow"))
        }
        "/hold" => {
            let _ = held.send(());
            release.notified().await;
            Ok(text("released"))
        }
        "/count" => {
            let body = req.into_body().collect().await?.to_bytes();
            Ok(text(&body.len().to_string()))
        }
        "/upgrade" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut resp = text("");
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert("upgrade", "echo".parse().unwrap());
            resp.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            Ok(resp)
        }
        _ => Ok(text("hello from upstream")),
    }
}

/// A gateway configuration, rendered to TOML.
pub struct Config {
    pub http: String,
    pub https: String,
    pub upstream: String,
    pub access: String,
    /// Further tables, as TOML text.
    pub extra: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    pub fn new(upstream: &str, dir: &TempDir, pki: &Pki) -> Config {
        let (cert, key) = pki.write(dir);
        Config {
            http: "127.0.0.1:0".into(),
            https: "127.0.0.1:0".into(),
            upstream: upstream.into(),
            access: String::new(),
            extra: String::new(),
            cert,
            key,
        }
    }

    pub fn render(&self) -> String {
        format!(
            "[listen]\nhttp = {:?}\nhttps = {:?}\n\n[tls]\ncert = {:?}\nkey = {:?}\n\n\
             [upstream]\nurl = {:?}\n\n[access]\n{}\n\n{}\n",
            self.http,
            self.https,
            self.cert.display().to_string(),
            self.key.display().to_string(),
            self.upstream,
            self.access,
            self.extra,
        )
    }
}

/// A gateway in this process in front of a new upstream, its configuration changed by
/// `configure`; also returns the CA its certificate comes from and the directory of its files.
pub async fn proxying_with(
    configure: impl FnOnce(&mut Config),
) -> (Gateway, Pki, Upstream, TempDir) {
    let (dir, pki, up) = (TempDir::new(), Pki::new(), Upstream::start().await);
    let mut cfg = Config::new(&up.url(), &dir, &pki);
    configure(&mut cfg);
    (Gateway::start(&cfg).await, pki, up, dir)
}

/// As [`proxying_with`], with `extra` tables (TOML text) in the configuration.
pub async fn proxying(extra: &str) -> (Gateway, Pki, Upstream, TempDir) {
    proxying_with(|cfg| cfg.extra = extra.into()).await
}

/// The gateway running in this process, on real sockets.
pub struct Gateway {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub live: edge_gateway::state::Live,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(config: &Config) -> Gateway {
        Self::start_with(config, Hooks::default()).await
    }

    pub async fn start_with(config: &Config, hooks: Hooks) -> Gateway {
        let settings = Settings::from_toml_str(&config.render()).unwrap();
        // The files the test wrote; independent of how Settings holds [tls].
        let key = edge_gateway::tls::load_certified_key(&config.cert, &config.key).unwrap();
        let certs = Arc::new(CertResolver::with_default(Arc::new(key)));
        let server = Server::bind(&settings, certs, hooks).await.unwrap();
        let shutdown = CancellationToken::new();
        let (http, https, live) = (server.http_addr(), server.https_addr(), server.live());
        let task = tokio::spawn(server.run(shutdown.clone()));
        Gateway {
            http,
            https,
            live,
            shutdown,
            task,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A TCP connection from `source` (any loopback address) to `addr`.
pub async fn tcp_from(source: Option<IpAddr>, addr: SocketAddr) -> TcpStream {
    let socket = match source.unwrap_or(addr.ip()) {
        IpAddr::V4(_) => TcpSocket::new_v4().unwrap(),
        IpAddr::V6(_) => TcpSocket::new_v6().unwrap(),
    };
    if let Some(src) = source {
        socket.bind(SocketAddr::new(src, 0)).unwrap();
    }
    let stream = tokio::time::timeout(PATIENCE, socket.connect(addr))
        .await
        .expect("connect timed out")
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A TLS connection to `addr` with `connector`, from `source`.
pub async fn tls_from(
    connector: &TlsConnector,
    source: Option<IpAddr>,
    addr: SocketAddr,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let tcp = tcp_from(source, addr).await;
    connector
        .connect(ServerName::try_from(NAME).unwrap(), tcp)
        .await
}

/// An HTTP/1.1 sender over `io`, its connection driven (with upgrades) in a task.
pub async fn h1<I>(io: I) -> hyper::client::conn::http1::SendRequest<Full<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// An HTTP/2 sender over `io`.
pub async fn h2<I>(io: I) -> hyper::client::conn::http2::SendRequest<Full<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// Reads a whole response.
pub async fn read(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("body timed out")
        .unwrap()
        .to_bytes();
    Got {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// Sends one request on `sender` and reads the response.
pub async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Got {
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("request timed out")
        .unwrap();
    read(resp).await
}

/// A GET request with a Host header.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", NAME)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// An HTTP/1.1 sender on a new TLS connection from `source`, trusting the test CA.
pub async fn https_h1(
    pki: &Pki,
    source: Option<IpAddr>,
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tls = tls_from(&pki.h1_client(), source, addr).await.unwrap();
    h1(tls).await
}

/// One HTTPS request (HTTP/1.1) on a new connection from `source`.
pub async fn https_send(
    pki: &Pki,
    source: Option<IpAddr>,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> Got {
    let mut sender = https_h1(pki, source, addr).await;
    send(&mut sender, req).await
}

/// One HTTPS GET (HTTP/1.1) on a new connection from `source`.
pub async fn https_get(pki: &Pki, source: Option<IpAddr>, addr: SocketAddr, path: &str) -> Got {
    https_send(pki, source, addr, get(path)).await
}

/// One plain HTTP GET on a new connection from `source`.
pub async fn http_get(source: Option<IpAddr>, addr: SocketAddr, path: &str) -> Got {
    let tcp = tcp_from(source, addr).await;
    let mut sender = h1(tcp).await;
    send(&mut sender, get(path)).await
}

/// Writes `request` as raw bytes and reads until the server closes; returns the text.
pub async fn raw<I>(mut io: I, request: &[u8]) -> String
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    io.write_all(request).await.unwrap();
    let out = until_closed(&mut io, "the connection").await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until the server closes `io` (or resets it) and returns what it sent; fails the test
/// if `what` (the connection, in words) is still open after [`PATIENCE`].
pub async fn until_closed<I>(io: &mut I, what: &str) -> Vec<u8>
where
    I: tokio::io::AsyncRead + Unpin,
{
    let mut out = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, io.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "{what} was left open");
    out
}

/// The real binary, with its standard error collected line by line.
pub struct Process {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// Sends the signal `name` (such as "HUP") to `pid` with kill(1), as supervisors do.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_edge-gateway")
}

impl Process {
    /// Starts `edge-gateway run --config FILE` (the config should set `log.format = "json"`)
    /// and waits for both "Listening" lines; returns the process and the bound addresses.
    pub fn run(config: &Path) -> (Process, SocketAddr, SocketAddr) {
        let mut child = Command::new(binary())
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (mut http, mut https) = (None, None);
        while http.is_none() || https.is_none() {
            let line = rx
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("no Listening lines; log: {:?}", lines.lock()));
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "Listening" {
                let addr: SocketAddr = v["listener.addr"].as_str().unwrap().parse().unwrap();
                match v["listener"].as_str().unwrap() {
                    "http" => http = Some(addr),
                    _ => https = Some(addr),
                }
            }
        }
        (Process { child, lines }, http.unwrap(), https.unwrap())
    }

    /// The log so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends `name` (such as "TERM") with kill(1).
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits for the exit status; fails the test after [`PATIENCE`].
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        match exit_within_patience(&mut self.child).await {
            Some(status) => status,
            None => panic!("the gateway did not exit; log: {:?}", self.log()),
        }
    }
}

/// Waits for `child` to exit; None if it still runs after [`PATIENCE`].
pub async fn exit_within_patience(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `edge-gateway check --config FILE`: (success, stdout, stderr).
pub fn check(config: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
