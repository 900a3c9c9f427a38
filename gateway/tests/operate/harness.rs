//! What the operations tests run against: the real `edge-gateway` binary, a real upstream
//! HTTP server, real TLS with a CA made for the test, and the notify socket a service manager
//! would hold. The test CA and the ports come from the integration tests' shared module.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream, UnixDatagram};
use tokio_rustls::TlsConnector;

pub use crate::common::{free_port, Leaf, Pki, NAME, PATIENCE};

/// The addresses a gateway is told to listen on.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub metrics: SocketAddr,
}

impl Ports {
    pub fn pick() -> Ports {
        let at = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        Ports {
            http: at(free_port()),
            https: at(free_port()),
            metrics: at(free_port()),
        }
    }
}

/// A configuration file's text: the listeners, the test certificate, the upstream, and
/// `access` as given (TOML lines for the `[access]` table).
pub fn config_text(ports: &Ports, dir: &Path, upstream: SocketAddr, access: &str) -> String {
    format!(
        r#"[listen]
http = "{http}"
https = "{https}"
metrics = "{metrics}"

[tls]
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"

[upstream]
url = "http://{upstream}"

[access]
{access}

[timeouts]
shutdown_grace = "10s"

[log]
access = false
"#,
        http = ports.http,
        https = ports.https,
        metrics = ports.metrics,
        dir = dir.display(),
    )
}

/// The notify socket a service manager would hold: the test binds it and reads what the
/// daemon says.
pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket { sock, path }
    }

    /// The next datagram, or None when nothing came within `wait`.
    pub async fn next_within(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(wait, self.sock.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(String::from_utf8(buf[..n].to_vec()).unwrap())
    }

    /// The next datagram; fails the test after [`PATIENCE`] (a little more, so that a
    /// caller's own bound of [`PATIENCE`] fires first, with the daemon's log).
    pub async fn next(&self) -> String {
        self.next_within(PATIENCE + Duration::from_secs(1))
            .await
            .expect("the daemon said nothing on the notify socket")
    }

    /// Reads until a datagram with the line `line` (such as `READY=1`) and returns that
    /// datagram, skipping watchdog pings. Other messages are returned in `skipped`.
    pub async fn until(&self, line: &str) -> (String, Vec<String>) {
        let mut skipped = Vec::new();
        loop {
            let msg = self.next().await;
            if msg.lines().any(|l| l == line) {
                return (msg, skipped);
            }
            if msg != "WATCHDOG=1\n" {
                skipped.push(msg);
            }
        }
    }
}

/// The value of `KEY=` in a notify datagram.
pub fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A running `edge-gateway run` with its own directory, configuration and notify socket.
pub struct Gateway {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub ports: Ports,
    pub notify: NotifySocket,
    pub pki: Pki,
    /// The certificate installed at start.
    pub leaf: Leaf,
    pub upstream: SocketAddr,
    /// Every notify datagram up to and including the first `READY=1`, pings left out.
    pub startup: Vec<String>,
}

/// Writes `leaf` as the configuration's `cert.pem` and `key.pem`, each renamed into place.
pub fn install_leaf(dir: &Path, leaf: &Leaf) {
    for (name, text) in [("key.pem", &leaf.key_pem), ("cert.pem", &leaf.cert_pem)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

impl Gateway {
    /// Writes the certificate and a configuration with `access`, starts the daemon with
    /// `NOTIFY_SOCKET` (and `WATCHDOG_USEC` when given), and waits for `READY=1`.
    pub async fn start(upstream: SocketAddr, access: &str, watchdog_usec: Option<u64>) -> Gateway {
        Gateway::start_with(upstream, access, watchdog_usec, &[]).await
    }

    /// As [`Gateway::start`], with more arguments after `run --config FILE`.
    pub async fn start_with(
        upstream: SocketAddr,
        access: &str,
        watchdog_usec: Option<u64>,
        args: &[&str],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let leaf = pki.leaf(2031);
        let ports = Ports::pick();
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, config_text(&ports, dir.path(), upstream, access)).unwrap();
        let notify = NotifySocket::bind(dir.path());
        install_leaf(dir.path(), &leaf);

        let mut cmd = Command::new(crate::common::binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("NOTIFY_SOCKET", &notify.path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "edge_gateway=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("gateway.log")).unwrap(),
            ));
        if let Some(usec) = watchdog_usec {
            cmd.env("WATCHDOG_USEC", usec.to_string());
        }
        let child = cmd.spawn().unwrap();
        let mut gateway = Gateway {
            startup: Vec::new(),
            child,
            leaf,
            dir,
            config,
            ports,
            notify,
            pki,
            upstream,
        };
        gateway.wait_ready_or_log().await;
        gateway
    }

    async fn wait_ready_or_log(&mut self) {
        match tokio::time::timeout(PATIENCE, self.notify.until("READY=1")).await {
            Ok((ready, mut before)) => {
                before.push(ready);
                self.startup = before;
            }
            Err(_) => panic!("the gateway never said READY=1; its log:\n{}", self.log()),
        }
    }

    /// What the daemon wrote on standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Replaces the configuration file the way tools do: a new file renamed over the old.
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("gateway.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// The configuration with a different `[access]` table.
    pub fn config_with_access(&self, access: &str) -> String {
        config_text(&self.ports, self.dir.path(), self.upstream, access)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal with kill(1), as `ExecReload=` and supervisors do.
    pub fn signal(&self, name: &str) {
        crate::common::signal(self.pid(), name);
    }

    /// SIGHUP, then the notify messages up to the `READY=1` that ends the reload: returns
    /// the `RELOADING=1` datagram and the `READY=1` one.
    pub async fn reload(&self) -> (String, String) {
        self.signal("HUP");
        let done = async {
            let (reloading, _) = self.notify.until("RELOADING=1").await;
            let (ready, _) = self.notify.until("READY=1").await;
            (reloading, ready)
        };
        match tokio::time::timeout(PATIENCE, done).await {
            Ok(pair) => pair,
            Err(_) => panic!("no complete reload after SIGHUP; the log:\n{}", self.log()),
        }
    }

    /// Waits for the process to exit; fails the test after [`PATIENCE`].
    pub async fn wait_exit(&mut self) -> ExitStatus {
        match crate::common::exit_within_patience(&mut self.child).await {
            Some(status) => status,
            None => panic!("the gateway did not exit; its log:\n{}", self.log()),
        }
    }

    /// A TLS client for this gateway's certificate.
    pub fn client(&self, source: Ipv4Addr) -> Client {
        Client::new(&self.pki, self.ports.https, source)
    }

    /// Scrapes until `series` reads `value`, and returns that scrape. For what is counted as
    /// a connection ends: the client may see the close a moment before the server's task has
    /// counted it. Fails the test after [`PATIENCE`].
    pub async fn scrape_until(&self, series: &str, value: f64) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.scrape().await;
            if sample(&text, series) == Some(value) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} never read {value}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET /metrics` on the metrics listener, as text.
    pub async fn scrape(&self) -> String {
        let stream = TcpStream::connect(self.ports.metrics).await.unwrap();
        let (status, body) = plain_get(stream, "/metrics").await.unwrap();
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 GET on a fresh connection.
pub async fn plain_get(stream: TcpStream, path: &str) -> Result<(StatusCode, Bytes), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    get(&mut sender, path).await
}

/// A GET on an open connection: status and body, or what went wrong.
pub async fn get(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
) -> Result<(StatusCode, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let req = Request::get(path)
        .header(http::header::HOST, NAME)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// An HTTPS client from a chosen loopback source address (so the CIDR filter sees it).
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
    /// The same, without session resumption, so a handshake shows the certificate served
    /// now rather than the one the resumed session began with.
    full_handshakes: TlsConnector,
    addr: SocketAddr,
    source: Ipv4Addr,
}

impl Client {
    pub fn new(pki: &Pki, addr: SocketAddr, source: Ipv4Addr) -> Client {
        let config = pki.client_config(rustls::DEFAULT_VERSIONS, &[]);
        let mut fresh = config.clone();
        fresh.resumption = rustls::client::Resumption::disabled();
        Client {
            connector: TlsConnector::from(Arc::new(config)),
            full_handshakes: TlsConnector::from(Arc::new(fresh)),
            addr,
            source,
        }
    }

    /// A new TLS connection, ready for requests.
    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(self.source), 0))
            .map_err(|e| format!("bind {}: {e}", self.source))?;
        let tcp = socket
            .connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let tls = self
            .connector
            .connect(ServerName::try_from(NAME).unwrap(), tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// One GET on a connection of its own.
    pub async fn get_once(&self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let mut sender = self.connect().await?;
        get(&mut sender, path).await
    }

    /// The certificate (DER) a new handshake gets.
    pub async fn peer_certificate(&self) -> Vec<u8> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let tls = self
            .full_handshakes
            .connect(ServerName::try_from(NAME).unwrap(), tcp)
            .await
            .unwrap();
        let (_, conn) = tls.get_ref();
        conn.peer_certificates().unwrap()[0].to_vec()
    }
}

/// The upstream: a real HTTP/1.1 server on loopback. `GET /slow` answers after a second
/// and reports on `slow_started` that it began; everything else answers `ok` at once.
pub struct Upstream {
    pub addr: SocketAddr,
    pub slow_started: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, slow_started) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let tx = tx.clone();
                        async move {
                            if req.uri().path() == "/slow" {
                                let _ = tx.send(());
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                return Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                    Bytes::from_static(b"slow ok"),
                                )));
                            }
                            Ok(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, slow_started }
    }
}

/// The value of one sample of the rendered metrics, by its exact series text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
