use super::*;

fn parse(toml_text: &str) -> AcmeSettings {
    toml::from_str(toml_text).expect("settings parse")
}

const MINIMAL: &str = r#"
directory = "https://acme.example.net/dir"
domains = ["app.example.com"]
storage = "/var/lib/edge-gateway/acme"
"#;

#[test]
fn defaults_fill_the_optional_keys() {
    let s = parse(MINIMAL);
    assert_eq!(s.challenge, ChallengeKind::Http01);
    assert_eq!(s.renew_before, None);
    assert_eq!(s.retry_initial, Duration::from_secs(60));
    assert!(s.validate().is_ok());
}

#[test]
fn durations_take_units_or_seconds() {
    let s = parse(&format!(
        "{MINIMAL}renew_before = \"30d\"\nretry_initial = 5\nretry_max = \"2h\"\n\
         challenge = \"tls-alpn-01\"\n"
    ));
    assert_eq!(s.renew_before, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(s.retry_initial, Duration::from_secs(5));
    assert_eq!(s.retry_max, Duration::from_secs(7200));
    assert_eq!(s.challenge, ChallengeKind::TlsAlpn01);
    assert_eq!(
        parse_duration("3w").unwrap_err(),
        "\"3w\" has unknown unit \"w\" (use s, m, h or d)"
    );
}

#[test]
fn unknown_keys_and_challenges_are_refused() {
    let err = toml::from_str::<AcmeSettings>(&format!("{MINIMAL}domain = \"x\"\n")).unwrap_err();
    assert!(err.to_string().contains("unknown field `domain`"), "{err}");
    let err =
        toml::from_str::<AcmeSettings>(&format!("{MINIMAL}challenge = \"dns-01\"\n")).unwrap_err();
    assert!(
        err.to_string().contains("unknown variant `dns-01`"),
        "{err}"
    );
}

fn error_of(edit: impl FnOnce(&mut AcmeSettings)) -> String {
    let mut s = parse(MINIMAL);
    edit(&mut s);
    s.validate().unwrap_err().to_string()
}

#[test]
fn each_bad_value_names_its_key() {
    assert_eq!(
        error_of(|s| s.directory = "http://acme.example.net/dir".into()),
        "acme.directory: \"http://acme.example.net/dir\" is not an https:// URL; \
         ACME directories are served over HTTPS"
    );
    assert_eq!(
        error_of(|s| s.directory = "not a url".into()),
        "acme.directory: \"not a url\" is not a URL: invalid uri character"
    );
    assert_eq!(
        error_of(|s| s.domains.clear()),
        "acme.domains: must list at least one name"
    );
    assert_eq!(
        error_of(|s| s.domains.push("*.example.com".into())),
        "acme.domains: \"*.example.com\" is a wildcard, which only dns-01 can prove; \
         use explicit names"
    );
    assert_eq!(
        error_of(|s| s.domains.push("App.Example.com".into())),
        "acme.domains: \"App.Example.com\" is listed twice"
    );
    assert_eq!(
        error_of(|s| s.domains.push("bad_name.example.com".into())),
        "acme.domains: \"bad_name.example.com\" is not a fully qualified DNS name"
    );
    assert_eq!(
        error_of(|s| s.domains.push("10.0.1.10".into())),
        "acme.domains: \"10.0.1.10\" is an IP address; certificates are ordered for DNS names"
    );
    assert_eq!(
        error_of(|s| s.contact.push("ops@example.com".into())),
        "acme.contact: \"ops@example.com\" is not a mailto: URL \
         (write \"mailto:ops@example.com\")"
    );
    assert_eq!(
        error_of(|s| s.storage = "".into()),
        "acme.storage: is empty (the directory for keys and certificates)"
    );
    assert_eq!(
        error_of(|s| s.retry_max = Duration::from_secs(1)),
        "acme.retry_max: must not be shorter than acme.retry_initial"
    );
}
