//! The systemd notify protocol: the daemon tells the service manager its state.
//!
//! `READY=1` once the listeners are bound and a certificate is loaded;
//! `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts and `READY=1` when
//! it ends (applied or refused); `STOPPING=1` on shutdown; `WATCHDOG=1` at half
//! of `WATCHDOG_USEC`; and `STATUS=` lines that `systemctl status` shows.
//! Without `NOTIFY_SOCKET` in the environment every call is a no-op, so the
//! same binary runs under supervisord, in a terminal or in tests.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// Sends state changes to the service manager, if there is one.
#[derive(Clone, Debug)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier that speaks only when `NOTIFY_SOCKET` is set.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// Whether messages go anywhere.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Start-up or a reload is complete; `status` says what is being served.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload starts. systemd requires the monotonic time with it, so that it
    /// can tell this reload from an older one.
    pub fn reloading(&self, status: &str) {
        if !self.enabled {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
            // Without the clock systemd would reject RELOADING=1; say the
            // status at least.
            Err(e) => {
                warn!(error = %e, "Reading CLOCK_MONOTONIC for RELOADING=1 failed");
                self.send(&[NotifyState::Status(status)]);
            }
        }
    }

    /// Shutdown has begun: listeners are closed, requests in flight drain.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// A status line only (a refused reload, a renewed certificate).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// One keep-alive ping.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// How often to ping: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
    /// advises, or `None` when no watchdog is armed for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2)
    }

    /// Pings from a task of the runtime until `shutdown` completes. A runtime
    /// so stuck that this task cannot run stops the pings, and systemd kills
    /// and restarts the daemon; that is the point of running it there rather
    /// than on a thread of its own.
    pub fn spawn_watchdog(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.watchdog_interval()?;
        let notifier = self.clone();
        debug!(
            interval_ms = every.as_millis() as u64,
            "Watchdog pings armed"
        );
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            // After a stall, ping once rather than in a burst.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = ticks.tick() => notifier.watchdog(),
                }
            }
        }))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            // Under systemd this means the state it shows is wrong; say so.
            warn!(error = %e, "Sending a notification to the service manager failed");
        }
    }
}

/// A status line must stay one line: systemd shows only up to a newline.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
