//! The HTTPS listener: TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, HSTS on responses.

mod common;

use std::process::Command;

use common::{get, h1, h2, proxying, read, send, tcp_from, tls_from, until_closed, Seen};
use http::Version;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn handshakes_at_tls_1_3_and_1_2_carry_hsts() {
    let (gw, pki, _up, _dir) = proxying("").await;
    for (version, expected) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let client = pki.client(&[version], &[b"http/1.1"]);
        let tls = tls_from(&client, None, gw.https).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        let mut sender = h1(tls).await;
        let got = send(&mut sender, get("/")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "hello from upstream");
        assert_eq!(
            got.header("strict-transport-security"),
            Some("max-age=31536000")
        );
    }
}

#[tokio::test]
async fn hsts_is_configurable() {
    let (gw, pki, _up, _dir) = proxying("[hsts]\nmax_age = 600\ninclude_subdomains = true\n").await;
    let got = common::https_get(&pki, None, gw.https, "/").await;
    assert_eq!(
        got.header("strict-transport-security"),
        Some("max-age=600; includeSubDomains")
    );
    let (gw, pki, _up, _dir) = proxying("[hsts]\nmax_age = 0\n").await;
    let got = common::https_get(&pki, None, gw.https, "/").await;
    assert_eq!(got.header("strict-transport-security"), None);
}

/// A TLS 1.1 ClientHello (no supported_versions extension), as an old client sends it.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend([0x01, 0x00]);
    let mut handshake = vec![0x01, 0, 0, body.len() as u8];
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend(handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_fatal_alert() {
    let (gw, _pki, _up, _dir) = proxying("").await;
    let mut tcp = tcp_from(None, gw.https).await;
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let answer = until_closed(&mut tcp, "the TLS 1.1 connection").await;
    // An alert record, not a ServerHello: content type 21, two version bytes, length 2,
    // level fatal (2), and handshake_failure (40) as rustls answers, or protocol_version (70).
    assert!(answer.len() >= 7, "answer: {answer:?}");
    assert_eq!(answer[0], 21, "not an alert: {answer:?}");
    assert_eq!(&answer[3..6], &[0, 2, 2], "answer: {answer:?}");
    assert!([40, 70].contains(&answer[6]), "answer: {answer:?}");
}

fn s_client(addr: std::net::SocketAddr, version_flag: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args([version_flag, "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn openssl_negotiates_1_2_and_1_3_but_not_1_1() {
    let (gw, _pki, _up, _dir) = proxying("").await;
    let addr = gw.https;
    let (ok12, text12, ok13, text13, ok11, text11) = tokio::task::spawn_blocking(move || {
        let (ok12, text12) = s_client(addr, "-tls1_2");
        let (ok13, text13) = s_client(addr, "-tls1_3");
        let (ok11, text11) = s_client(addr, "-tls1_1");
        (ok12, text12, ok13, text13, ok11, text11)
    })
    .await
    .unwrap();
    assert!(ok12 && text12.contains("Protocol  : TLSv1.2"), "{text12}");
    assert!(!text12.contains("Cipher is (NONE)"), "{text12}");
    assert!(ok13 && text13.contains("New, TLSv1.3"), "{text13}");
    assert!(!ok11, "TLS 1.1 was accepted: {text11}");
    assert!(text11.contains("Cipher is (NONE)"), "{text11}");
    assert!(
        text11.contains("alert handshake failure") || text11.contains("alert protocol version"),
        "{text11}"
    );
}

#[tokio::test]
async fn alpn_chooses_h2_or_http_1_1() {
    let (gw, pki, _up, _dir) = proxying("").await;

    let client = pki.client(rustls::ALL_VERSIONS, &[b"h2", b"http/1.1"]);
    let tls = tls_from(&client, None, gw.https).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = h2(tls).await;
    let req = http::Request::get(format!("https://localhost:{}/headers", gw.https.port()))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = read(sender.send_request(req).await.unwrap()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.version, Version::HTTP_2);
    assert!(got.header("strict-transport-security").is_some());
    let seen = Seen::parse(&got.body);
    // The upstream speaks HTTP/1.1 and is given the :authority as Host.
    assert_eq!(
        seen.one("host"),
        Some(format!("localhost:{}", gw.https.port()).as_str())
    );

    let client = pki.client(rustls::ALL_VERSIONS, &[b"http/1.1"]);
    let tls = tls_from(&client, None, gw.https).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut sender = h1(tls).await;
    let got = send(&mut sender, get("/")).await;
    assert_eq!((got.status.as_u16(), got.version), (200, Version::HTTP_11));

    // No ALPN at all: HTTP/1.1.
    let client = pki.client(rustls::ALL_VERSIONS, &[]);
    let tls = tls_from(&client, None, gw.https).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let mut sender = h1(tls).await;
    assert_eq!(send(&mut sender, get("/")).await.status, 200);
}

#[tokio::test]
async fn curl_gets_h2_by_alpn() {
    let (gw, pki, _up, dir) = proxying("").await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let url = format!("https://localhost:{}/", gw.https.port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.https.port());
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
        ])
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &url,
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200", "{out:?}");
}
