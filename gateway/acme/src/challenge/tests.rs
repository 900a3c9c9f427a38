use super::*;

#[test]
fn only_pending_tokens_are_answered() {
    let store = ChallengeStore::new();
    assert_eq!(
        store.http01_lookup("/index.html"),
        Http01Lookup::NotAChallenge
    );
    assert_eq!(
        store.http01_lookup("/.well-known/acme-challenge/abc"),
        Http01Lookup::Unknown
    );
    store.put_http01("abc", "abc.thumbprint");
    assert_eq!(
        store.http01_lookup("/.well-known/acme-challenge/abc"),
        Http01Lookup::Answer(Arc::from("abc.thumbprint"))
    );
    assert_eq!(
        store.http01_lookup("/.well-known/acme-challenge/abcd"),
        Http01Lookup::Unknown
    );
    store.remove_http01("abc");
    assert_eq!(store.http01("abc"), None);
}

#[test]
fn tls_alpn01_certificate_names_the_domain_and_carries_the_digest() {
    let digest = [7u8; 32];
    let cert = tls_alpn01_certificate("app.example.com", &digest).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.end_entity_cert().unwrap()).unwrap();
    // id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31, critical, an OCTET STRING of the digest.
    let ext = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("acmeIdentifier extension");
    assert!(ext.critical);
    assert_eq!(&ext.value[2..], &digest);

    let store = ChallengeStore::new();
    store.put_tls_alpn01("App.Example.com", Arc::new(cert));
    assert!(store.tls_alpn01("app.example.com").is_some());
    store.remove_tls_alpn01("app.example.com");
    assert!(store.tls_alpn01("app.example.com").is_none());
}
