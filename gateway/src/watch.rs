//! Watching the configuration file: a change to it triggers the same reload as SIGHUP.
//!
//! The watch is on the file's directory, not the file: editors and configuration tools
//! replace a file by writing a new one and renaming it over the old, which a watch on the old
//! inode would never see. Events for other files in the directory are ignored, and a burst of
//! events (write, chmod, rename) becomes one reload once the directory has been quiet for
//! [`QUIET`]. A half-written file is no danger either way: a reload validates first and
//! changes nothing when the file is not valid.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the directory must be quiet after a change before the reload starts.
pub const QUIET: Duration = Duration::from_millis(300);

/// The watch could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {} for changes: {source}", dir.display())]
pub struct WatchError {
    /// The configuration file's directory.
    pub dir: PathBuf,
    /// What inotify reported.
    #[source]
    pub source: notify::Error,
}

/// Watches `config`'s directory until `shutdown`; the receiver gets one message per settled
/// change of the file.
pub fn spawn(config: &Path, shutdown: CancellationToken) -> Result<mpsc::Receiver<()>, WatchError> {
    let dir = match config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name: Option<OsString> = config.file_name().map(OsString::from);
    let (raw_tx, mut raw) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = raw_tx.send(());
        }
    })
    .map_err(|source| WatchError {
        dir: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError {
            dir: dir.clone(),
            source,
        })?;
    tracing::info!(config.dir = %dir.display(), "Watching the configuration for changes");

    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        // The watcher lives as long as this task: dropping it ends the watch.
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = raw.recv() => if got.is_none() { return },
            }
            // Settle: wait until no event has come for QUIET.
            while let Ok(Some(())) = tokio::time::timeout(QUIET, raw.recv()).await {}
            // A reload already queued covers this change too.
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}
