use super::*;

/// A fresh directory under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "edge-acme-storage-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn open_creates_a_private_directory_and_the_account_key_once() {
    let scratch = Scratch::new("create");
    let dir = scratch.0.join("acme");
    let storage = Storage::open(&dir).unwrap();
    assert_eq!(mode_of(&dir), 0o700);

    let first = storage.account_key().unwrap();
    assert_eq!(mode_of(&dir.join(ACCOUNT_FILE)), 0o600);
    let again = Storage::open(&dir).unwrap().account_key().unwrap();
    assert_eq!(first.secret_pkcs8_der(), again.secret_pkcs8_der());
}

#[test]
fn certificate_round_trips_and_leaves_no_temporary_file() {
    let scratch = Scratch::new("roundtrip");
    let storage = Storage::open(&scratch.0.join("acme")).unwrap();
    assert!(storage.load_certificate().unwrap().is_none());
    let chain = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
    let key = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n";
    storage.store_certificate(chain, key).unwrap();
    let stored = storage.load_certificate().unwrap().unwrap();
    assert_eq!(stored.chain_pem, format!("{chain}\n"));
    assert_eq!(stored.key_pem, key);
    assert_eq!(mode_of(&storage.certificate_path()), 0o600);
    let names: Vec<_> = fs::read_dir(storage.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![CERTIFICATE_FILE.to_owned()]);
}

#[test]
fn an_open_directory_or_file_is_refused_by_name() {
    let scratch = Scratch::new("mode");
    let dir = scratch.0.join("acme");
    Storage::open(&dir).unwrap().account_key().unwrap();

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let err = Storage::open(&dir).unwrap_err().to_string();
    let shown = dir.display();
    assert_eq!(
        err,
        format!(
            "ACME storage {shown} has mode 0755, which lets other users read the keys; \
             it must be 0700; run: chmod 700 {shown}"
        )
    );
    assert_eq!(Storage::check(&dir).unwrap_err().to_string(), err);

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let key = dir.join(ACCOUNT_FILE);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        Storage::open(&dir).unwrap_err().to_string(),
        format!(
            "ACME storage {} has mode 0640, which lets other users read the keys; \
             it must be 0600; run: chmod 600 {}",
            key.display(),
            key.display()
        )
    );
}

#[test]
fn a_file_where_the_directory_should_be_is_refused() {
    let scratch = Scratch::new("file");
    let path = scratch.0.join("acme");
    fs::write(&path, b"").unwrap();
    assert_eq!(
        Storage::open(&path).unwrap_err().to_string(),
        format!("ACME storage {} is not a directory", path.display())
    );
}

#[test]
fn a_directory_of_another_user_is_refused_by_name() {
    if effective_uid().unwrap() != 0 {
        eprintln!("skipped: changing a directory's owner needs root");
        return;
    }
    let scratch = Scratch::new("owner");
    let dir = scratch.0.join("acme");
    Storage::open(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
    assert_eq!(
        Storage::open(&dir).unwrap_err().to_string(),
        format!(
            "ACME storage {0} is owned by uid 65534, but edge-gateway runs as uid 0; \
             run: chown 0 {0}",
            dir.display()
        )
    );
}
