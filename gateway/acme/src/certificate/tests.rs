use super::*;

use rcgen::{CertificateParams, KeyPair};

fn leaf(names: &[&str], days: i64) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    let start = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    params.not_before = start;
    params.not_after = start + time::Duration::days(days);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x0a, 0xbc]));
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn the_leaf_is_read_for_names_serial_and_validity() {
    let (chain, key) = leaf(&["App.example.com", "www.example.com"], 90);
    let issued = Issued::from_pem(&chain, &key).unwrap();
    let info = &issued.info;
    assert_eq!(info.names, vec!["app.example.com", "www.example.com"]);
    assert_eq!(info.serial, "0abc");
    assert_eq!(info.lifetime(), Duration::from_secs(90 * 86400));
    assert!(info.covers(&["www.example.com".into(), "app.example.com".into()]));
    assert!(!info.covers(&["api.example.com".into()]));
    assert!(info.valid_at(info.not_before));
    assert!(!info.valid_at(info.not_after));
}

#[test]
fn renewal_is_due_at_two_thirds_or_renew_before_expiry() {
    let (chain, key) = leaf(&["app.example.com"], 90);
    let info = Issued::from_pem(&chain, &key).unwrap().info;
    let day = Duration::from_secs(86400);
    assert_eq!(info.renewal_due(None), info.not_before + day * 60);
    assert_eq!(info.renewal_due(Some(day * 30)), info.not_after - day * 30);
    // A renew_before longer than the lifetime would renew at once, for ever: ignored.
    assert_eq!(
        info.renewal_due(Some(day * 100)),
        info.not_before + day * 60
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let (chain, _) = leaf(&["app.example.com"], 90);
    let (_, other_key) = leaf(&["app.example.com"], 90);
    let err = Issued::from_pem(&chain, &other_key).unwrap_err();
    assert!(
        err.starts_with("the private key does not match the certificate"),
        "{err}"
    );
    assert_eq!(
        Issued::from_pem("", &other_key).unwrap_err(),
        "the certificate chain is empty"
    );
}
