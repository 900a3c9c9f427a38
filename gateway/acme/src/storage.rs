//! The storage directory: the account key and the current certificate, private to the gateway.
//!
//! Layout (all mode 0600 in a 0700 directory owned by the gateway's user):
//!
//! - `account.pem`: the ACME account key (PKCS#8), created once and then kept, so that every
//!   order is made by the same account.
//! - `certificate.pem`: the certificate chain followed by its private key, in one file so that
//!   a crash can never leave a certificate beside the key of another one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;

const ACCOUNT_FILE: &str = "account.pem";
const CERTIFICATE_FILE: &str = "certificate.pem";

/// Why the storage directory or a file in it cannot be used; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Reading, writing or creating failed.
    #[error("ACME storage {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The path belongs to another user.
    #[error(
        "ACME storage {path} is owned by uid {owner}, but edge-gateway runs as uid {uid}; \
         run: chown {uid} {path}",
        path = path.display()
    )]
    Owner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The gateway's effective user.
        uid: u32,
    },
    /// Group or others may read or enter it.
    #[error(
        "ACME storage {path} has mode {mode:04o}, which lets other users read the keys; \
         it must be {want:04o}; run: chmod {want:o} {path}",
        path = path.display()
    )]
    Mode {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode it must have.
        want: u32,
    },
    /// The storage path exists but is a file.
    #[error("ACME storage {} is not a directory", path.display())]
    NotDirectory {
        /// The path.
        path: PathBuf,
    },
    /// A stored file does not hold what it should.
    #[error("ACME storage {}: {what}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        what: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A certificate chain and its key as stored, both PEM.
pub struct StoredCertificate {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The private key.
    pub key_pem: String,
}

/// The opened storage directory.
#[derive(Clone, Debug)]
pub struct Storage {
    dir: PathBuf,
    uid: u32,
}

impl Storage {
    /// Opens the directory, creating it with mode 0700 when it is missing, and checks that it
    /// and the files in it belong to this process's user and are closed to everyone else.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let uid = effective_uid().map_err(io_error(Path::new("/proc/self/status")))?;
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_error(dir))?;
                // The umask may have taken bits away, never added them; set it exactly anyway.
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_error(dir))?;
            }
            Err(e) => return Err(io_error(dir)(e)),
            Ok(_) => {}
        }
        let storage = Self {
            dir: dir.to_owned(),
            uid,
        };
        storage.inspect()?;
        Ok(storage)
    }

    /// Checks an existing directory without creating anything, as `edge-gateway check` does;
    /// a missing directory is fine, since [`Storage::open`] will create it.
    pub fn check(dir: &Path) -> Result<(), StorageError> {
        let uid = effective_uid().map_err(io_error(Path::new("/proc/self/status")))?;
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(dir)(e)),
            Ok(_) => Self {
                dir: dir.to_owned(),
                uid,
            }
            .inspect(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn inspect(&self) -> Result<(), StorageError> {
        let meta = fs::symlink_metadata(&self.dir).map_err(io_error(&self.dir))?;
        if !meta.is_dir() {
            return Err(StorageError::NotDirectory {
                path: self.dir.clone(),
            });
        }
        self.check_private(&self.dir, &meta, 0o700)?;
        for name in [ACCOUNT_FILE, CERTIFICATE_FILE] {
            let path = self.dir.join(name);
            match fs::symlink_metadata(&path) {
                Ok(meta) => self.check_private(&path, &meta, 0o600)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        Ok(())
    }

    fn check_private(
        &self,
        path: &Path,
        meta: &fs::Metadata,
        want: u32,
    ) -> Result<(), StorageError> {
        if meta.uid() != self.uid {
            return Err(StorageError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                uid: self.uid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StorageError::Mode {
                path: path.to_owned(),
                mode,
                want,
            });
        }
        Ok(())
    }

    /// The account key: read when stored, otherwise generated (ECDSA P-256) and stored first.
    pub fn account_key(&self) -> Result<PrivatePkcs8KeyDer<'static>, StorageError> {
        let path = self.dir.join(ACCOUNT_FILE);
        match fs::read(&path) {
            Ok(pem) => {
                PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| StorageError::Corrupt {
                    path: path.clone(),
                    what: format!(
                        "no PKCS#8 private key in it ({e}); move it away to start a new account"
                    ),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| {
                    StorageError::Corrupt {
                        path: path.clone(),
                        what: format!("could not generate an account key: {e}"),
                    }
                })?;
                self.write_atomic(ACCOUNT_FILE, key.serialize_pem().as_bytes())?;
                tracing::info!(path = %path.display(), "ACME account key created");
                Ok(PrivatePkcs8KeyDer::from(key.serialize_der()))
            }
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// The stored certificate and key, if any.
    pub fn load_certificate(&self) -> Result<Option<StoredCertificate>, StorageError> {
        let path = self.dir.join(CERTIFICATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        // The key block follows the chain; split at its header.
        let Some(at) = text.find("-----BEGIN PRIVATE KEY-----") else {
            return Err(StorageError::Corrupt {
                path,
                what: "no PRIVATE KEY block after the certificate chain".into(),
            });
        };
        let (chain, key) = text.split_at(at);
        Ok(Some(StoredCertificate {
            chain_pem: chain.to_owned(),
            key_pem: key.to_owned(),
        }))
    }

    /// Replaces the stored certificate and key in one atomic step.
    pub fn store_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), StorageError> {
        let mut bundle = String::with_capacity(chain_pem.len() + key_pem.len() + 1);
        bundle.push_str(chain_pem);
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(key_pem);
        self.write_atomic(CERTIFICATE_FILE, bundle.as_bytes())
    }

    /// The path of the stored certificate, for logs.
    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join(CERTIFICATE_FILE)
    }

    /// Temporary file, fsync, rename, fsync of the directory: after a crash the file is either
    /// the old one or the new one, whole.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&tmp)(e)),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        file.write_all(bytes).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&self.dir))?;
        Ok(())
    }
}

/// The effective uid, read from `/proc/self/status` so that no `unsafe` call is needed.
fn effective_uid() -> io::Result<u32> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Uid line"))
}

#[cfg(test)]
mod tests;
