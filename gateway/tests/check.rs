//! `edge-gateway check`: every bad configuration is refused with a message naming the key.

mod common;

use std::ffi::OsStr;

use common::{check, Pki, TempDir};

/// A valid file, with `replace` applied to its text (pairs of old, new).
fn config(dir: &TempDir, pki: &Pki, replace: &[(&str, &str)]) -> std::path::PathBuf {
    let (cert, key) = pki.write(dir);
    let mut text = format!(
        r#"[listen]
http = "127.0.0.1:8080"
https = "127.0.0.1:8443"

[tls]
cert = "{}"
key = "{}"

[upstream]
url = "http://127.0.0.1:8000"

[access]
allow = ["203.0.113.0/28"]
deny = []
trusted_proxies = []

[timeouts]
connect = "5s"

[limits]
max_body_bytes = 1048576

[redirect]
status = 301

[log]
format = "human"
"#,
        cert.display(),
        key.display()
    );
    for (old, new) in replace {
        assert!(text.contains(old), "template lacks {old:?}");
        text = text.replace(old, new);
    }
    dir.write("gateway.toml", &text)
}

/// Asserts that `check` fails and that stderr holds `expected` as a line's ending.
fn refused(path: &std::path::Path, env: &[(&str, &str)], expected: &str) {
    let (ok, _, err) = check(path, env);
    assert!(!ok, "check accepted it; stderr: {err}");
    let file = path.display();
    assert!(
        err.lines().any(|l| l.ends_with(expected)),
        "expected a line ending in {expected:?}, got:\n{err}"
    );
    assert!(
        err.contains(&format!("configuration file {file} test failed")),
        "{err}"
    );
}

#[test]
fn a_valid_configuration_passes() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let path = config(&dir, &pki, &[]);
    let (ok, out, err) = check(&path, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("test is successful"), "{out}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn host_bits_are_accepted_with_a_warning_naming_the_entry() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let path = config(
        &dir,
        &pki,
        &[(
            r#"allow = ["203.0.113.0/28"]"#,
            r#"allow = ["203.0.113.0/28", "10.0.1.5/24"]"#,
        )],
    );
    let (ok, out, err) = check(&path, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("test is successful"));
    assert!(
        err.contains(
            r#"warning: access.allow[1]: "10.0.1.5/24" has host bits set; using 10.0.1.0/24"#
        ),
        "{err}"
    );
}

/// What `check` says of a range entry it cannot read, after the entry's key and value.
const NOT_A_RANGE: &str =
    r#"is not a CIDR (such as "203.0.113.0/24" or "2001:db8::/32") or an IP address"#;

#[test]
fn bad_ranges_name_their_list_and_entry() {
    let cases = [
        (
            r#"allow = ["203.0.113.0/28"]"#,
            r#"allow = ["203.0.113.0/28", "10.0.0.0/8", "not-a-net"]"#,
            r#"access.allow[2]: "not-a-net""#,
        ),
        (
            "deny = []",
            r#"deny = ["10.0.0.0/33"]"#,
            r#"access.deny[0]: "10.0.0.0/33""#,
        ),
        (
            "trusted_proxies = []",
            r#"trusted_proxies = ["::1/129"]"#,
            r#"access.trusted_proxies[0]: "::1/129""#,
        ),
    ];
    for (old, new, entry) in cases {
        let (dir, pki) = (TempDir::new(), Pki::new());
        let path = config(&dir, &pki, &[(old, new)]);
        refused(&path, &[], &format!("{entry} {NOT_A_RANGE}"));
    }
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"http = "127.0.0.1:8080""#,
            r#"http = "127.0.0.1""#,
            "listen.http: \"127.0.0.1\" is not an address with a port (write IP:PORT, such as \
             \"10.0.1.10:80\" or \"[::]:443\")",
        ),
        (
            r#"https = "127.0.0.1:8443""#,
            "",
            r#"listen.https: missing (an address such as "10.0.1.10:443")"#,
        ),
        (
            r#"https = "127.0.0.1:8443""#,
            r#"https = "127.0.0.1:8080""#,
            "listen.https: is the same address as listen.http (127.0.0.1:8080)",
        ),
        (
            r#"url = "http://127.0.0.1:8000""#,
            r#"url = "https://127.0.0.1:8000""#,
            "upstream.url: \"https://127.0.0.1:8000\" must start with http:// (TLS to the \
             upstream is not supported)",
        ),
        (
            r#"url = "http://127.0.0.1:8000""#,
            r#"url = "http://127.0.0.1:8000/app""#,
            "upstream.url: \"http://127.0.0.1:8000/app\" has a path; only scheme, host and port \
             are supported",
        ),
        (
            r#"url = "http://127.0.0.1:8000""#,
            "",
            r#"upstream.url: missing (a URL such as "http://127.0.0.1:8000")"#,
        ),
        (
            r#"connect = "5s""#,
            r#"connect = "soon""#,
            "timeouts.connect: \"soon\" is not a duration (write it like \"500ms\", \"5s\" or \
             \"2m\")",
        ),
        (
            r#"connect = "5s""#,
            r#"connect = "0s""#,
            "timeouts.connect: must be greater than zero",
        ),
        (
            "max_body_bytes = 1048576",
            "max_header_bytes = 100",
            "limits.max_header_bytes: 100 is too small (at least 1024)",
        ),
        (
            "max_body_bytes = 1048576",
            "max_connections = 0",
            "limits.max_connections: 0 is too small (at least 1)",
        ),
        (
            "status = 301",
            "status = 200",
            "redirect.status: 200 is not allowed here (use one of 301, 302, 303, 307, 308)",
        ),
        (
            "status = 301",
            "status_other_methods = 301",
            "redirect.status_other_methods: 301 is not allowed here (use one of 307, 308)",
        ),
        (
            r#"format = "human""#,
            r#"format = "xml""#,
            r#"log.format: "xml" is not a log format (use "human" or "json")"#,
        ),
        (
            "max_body_bytes = 1048576",
            r#"max_body_bytes = "lots""#,
            "invalid type: string \"lots\", expected an integer for key `limits.max_body_bytes` \
             in ",
        ),
        (
            r#"http = "127.0.0.1:8080""#,
            r#"htp = "127.0.0.1:8080""#,
            "unknown field `htp`, expected one of `http`, `https`, `metrics` for key `listen`",
        ),
    ];
    for (old, new, expected) in cases {
        let (dir, pki) = (TempDir::new(), Pki::new());
        let path = config(&dir, &pki, &[(old, new)]);
        if let Some(prefix) = expected.strip_suffix(" in ") {
            // The config crate names the file its own way (relative) after "in".
            let (ok, _, err) = check(&path, &[]);
            assert!(
                !ok && err.contains(prefix),
                "expected {prefix:?} in:\n{err}"
            );
        } else {
            refused(&path, &[], expected);
        }
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let path = config(
        &dir,
        &pki,
        &[
            (r#"allow = ["203.0.113.0/28"]"#, r#"allow = ["x"]"#),
            (r#"connect = "5s""#, r#"connect = "y""#),
        ],
    );
    let (ok, _, err) = check(&path, &[]);
    assert!(!ok);
    assert!(err.contains("access.allow[0]"), "{err}");
    assert!(err.contains("timeouts.connect"), "{err}");
}

#[test]
fn environment_overrides_are_validated_like_the_file() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let path = config(&dir, &pki, &[]);
    refused(
        &path,
        &[("EDGE_GATEWAY__ACCESS__ALLOW", "203.0.113.0/28,bogus")],
        &format!(r#"access.allow[1]: "bogus" {NOT_A_RANGE}"#),
    );
    let (ok, _, err) = check(&path, &[("EDGE_GATEWAY__LISTEN__HTTPS", "[::]:9443")]);
    assert!(ok, "{err}");
}

#[test]
fn unreadable_or_unparsable_files_are_refused() {
    let dir = TempDir::new();
    let missing = dir.path().join("absent.toml");
    refused(
        &missing,
        &[],
        &format!(
            "configuration file {:?} not found",
            missing.display().to_string()
        ),
    );
    let broken = dir.write("broken.toml", "[listen\nhttp = 1\n");
    let (ok, _, err) = check(&broken, &[]);
    assert!(!ok);
    assert!(err.contains("TOML parse error at line 1"), "{err}");
}

#[test]
fn certificate_and_key_problems_are_refused() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let path = config(&dir, &pki, &[]);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));

    // A key from another pair.
    let other = Pki::new();
    std::fs::write(&key, &other.key_pem).unwrap();
    refused(
        &path,
        &[],
        &format!(
            "tls.key: {} does not match the certificate in {} (tls.cert)",
            key.display(),
            cert.display()
        ),
    );

    // No key at all in the key file.
    std::fs::write(&key, &pki.cert_pem).unwrap();
    refused(
        &path,
        &[],
        &format!(
            "tls.key: {} holds no private key (expected PEM PKCS#8, PKCS#1 or SEC1)",
            key.display()
        ),
    );

    // No certificate in the certificate file.
    std::fs::write(&key, &pki.key_pem).unwrap();
    std::fs::write(&cert, "not pem\n").unwrap();
    refused(
        &path,
        &[],
        &format!("tls.cert: {} holds no PEM certificate", cert.display()),
    );

    // A file that does not exist.
    std::fs::remove_file(&cert).unwrap();
    let (ok, _, err) = check(&path, &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "tls.cert: cannot read {}: I/O error",
            cert.display()
        )),
        "{err}"
    );
}

/// Keys in PKCS#8 (rcgen), SEC1 and PKCS#1 all load (the last two made with openssl).
#[test]
fn pkcs8_sec1_and_pkcs1_keys_load() {
    let dir = TempDir::new();
    let pki = Pki::new();
    let path = config(&dir, &pki, &[]);
    let (ok, _, err) = check(&path, &[]);
    assert!(ok, "PKCS#8: {err}");

    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let openssl = |args: &[&OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (k, c) = (key.as_os_str(), cert.as_os_str());

    // Each format: the openssl command that writes such a key, and the PEM label it gets.
    let mut rsa = os(&["genrsa", "-traditional", "-out"], k);
    rsa.push(OsStr::new("2048"));
    let formats: [(&str, Vec<&OsStr>, &str); 2] = [
        (
            "SEC1",
            os(
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                ],
                k,
            ),
            "BEGIN EC PRIVATE KEY",
        ),
        ("PKCS#1", rsa, "BEGIN RSA PRIVATE KEY"),
    ];
    for (format, genkey, label) in formats {
        openssl(&genkey);
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.contains(label), "{format}: {pem}");
        let mut req = os(&["req", "-new", "-x509", "-key"], k);
        req.extend(os(&["-subj", "/CN=localhost", "-days", "1", "-out"], c));
        openssl(&req);
        let (ok, _, err) = check(&path, &[]);
        assert!(ok, "{format}: {err}");
    }
}

/// `words` as command-line arguments, then `path` (which may hold any byte a path may).
fn os<'a>(words: &[&'a str], path: &'a OsStr) -> Vec<&'a OsStr> {
    let mut args: Vec<&OsStr> = words.iter().map(|w| OsStr::new(*w)).collect();
    args.push(path);
    args
}

#[test]
fn help_and_version_speak_to_a_newcomer() {
    let out = std::process::Command::new(common::binary())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["run", "check", "EDGE_GATEWAY__", "SIGTERM"] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
    let out = std::process::Command::new(common::binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("edge-gateway 0."));
}

/// The documented reference file passes `check` once its certificate paths exist.
#[test]
fn the_reference_configuration_is_valid() {
    let (dir, pki) = (TempDir::new(), Pki::new());
    let (cert, key) = pki.write(&dir);
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");
    let text = std::fs::read_to_string(reference)
        .unwrap()
        .replace(
            "/etc/edge-gateway/tls/fullchain.pem",
            cert.to_str().unwrap(),
        )
        .replace("/etc/edge-gateway/tls/privkey.pem", key.to_str().unwrap());
    let path = dir.write("reference.toml", &text);
    let (ok, out, err) = check(&path, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("test is successful"), "{out}");
    assert!(err.is_empty(), "warnings for the reference file: {err}");
}
