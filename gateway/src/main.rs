//! The `edge-gateway` command: `run` the daemon, or `check` a configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_gateway::acme::Acme;
use edge_gateway::config::ConfigError;
use edge_gateway::metrics::Metrics;
use edge_gateway::reload::{self, CertificateFacts, Reloader};
use edge_gateway::systemd::Notifier;
use edge_gateway::tls::{self, CertResolver};
use edge_gateway::{Hooks, Server, Settings};
use edge_gateway_acme::AcmeManager;
use tokio_util::sync::CancellationToken;

const DEFAULT_CONFIG: &str = "/etc/edge-gateway/gateway.toml";

/// TLS-terminating, CIDR-filtering reverse proxy.
///
/// Terminates HTTPS (TLS 1.2 and 1.3, HTTP/1.1 and HTTP/2), lets through only clients in the
/// allowed ranges, and proxies them to one upstream HTTP server. Plain HTTP requests are
/// redirected to HTTPS, except ACME challenges.
#[derive(Debug, Parser)]
#[command(
    name = "edge-gateway",
    version,
    after_help = "Start with `edge-gateway check --config FILE`, then `edge-gateway run --config \
                  FILE`.\nEvery key is documented in config/gateway.toml; any key can be \
                  overridden from the\nenvironment as EDGE_GATEWAY__TABLE__KEY (for example \
                  EDGE_GATEWAY__ACCESS__ALLOW=203.0.113.0/28).\nSIGTERM or SIGINT stops \
                  accepting, lets requests in flight finish, and exits 0."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also reload when the file changes (watching its directory), not only on SIGHUP.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a configuration, its certificate and key, and exit: 0 if valid, 1 if not.
    ///
    /// Each problem is printed on its own line with the key it is about, as `nginx -t` does.
    Check {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config, watch } => match run(&config, watch) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("edge-gateway: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(path: &Path) -> ExitCode {
    let file = path.display();
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(ConfigError::Invalid { problems, .. }) => {
            for p in problems {
                eprintln!("edge-gateway: {file}: {p}");
            }
            eprintln!("edge-gateway: configuration file {file} test failed");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("edge-gateway: {error}");
            eprintln!("edge-gateway: configuration file {file} test failed");
            return ExitCode::FAILURE;
        }
    };
    for w in &settings.warnings {
        eprintln!("edge-gateway: {file}: warning: {w}");
    }
    // Exactly one certificate source is in force: [tls] files, or [acme] (which wins).
    let source = match (&settings.tls, &settings.acme) {
        (Some(files), _) => tls::load_certified_key(&files.cert, &files.key)
            .map(drop)
            .map_err(|e| e.to_string()),
        (None, Some(acme)) => AcmeManager::check(acme).map_err(|e| e.to_string()),
        (None, None) => Ok(()),
    };
    if let Err(error) = source {
        eprintln!("edge-gateway: {file}: {error}");
        eprintln!("edge-gateway: configuration file {file} test failed");
        return ExitCode::FAILURE;
    }
    println!("edge-gateway: configuration file {file} test is successful");
    ExitCode::SUCCESS
}

#[tokio::main]
async fn run(path: &Path, watch: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // First of all: SIGHUP's default action would end the process.
    let hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let notifier = Notifier::from_env();
    let settings = Settings::load(path)?;
    edge_gateway::observe::init_logging(&settings.log)
        .map_err(|e| anyhow::anyhow!("log.level: {e}"))?;
    for w in &settings.warnings {
        tracing::warn!(config.key = %w.key, "{}", w.message);
    }
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    let certs = Arc::new(CertResolver::new());
    let mut facts = None;
    if let Some(files) = &settings.tls {
        let key = Arc::new(tls::load_certified_key(&files.cert, &files.key)?);
        facts = CertificateFacts::of(&key);
        if let Some(f) = &facts {
            f.export(&metrics);
        }
        certs.set_default(Some(key));
    }
    metrics.config_loaded_now();
    let acme = match settings.acme.clone() {
        Some(acme) => Some(Acme::new(acme, certs.clone(), metrics.clone()).context("[acme]")?),
        None => None,
    };
    let mut hooks = Hooks {
        observer: metrics.clone(),
        ..Hooks::default()
    };
    if let Some(acme) = &acme {
        hooks.challenges = acme.responder();
    }
    let server = Server::bind(&settings, certs.clone(), hooks)
        .await
        .context("cannot start")?;
    // The HTTP listener answers challenges from here on: the manager may order.
    if let Some(acme) = acme {
        acme.spawn();
    }
    let shutdown = CancellationToken::new();
    let metrics_listener = match settings.listen.metrics {
        Some(addr) => Some(
            reload::start_metrics_listener(addr, metrics.clone(), &shutdown)
                .context("cannot start")?,
        ),
        None => None,
    };
    let (http, https) = (server.http_addr(), server.https_addr());
    let status = reload::status_line(&settings, https, http, facts.as_ref(), "loaded");
    let reloader = Reloader::new(reload::Parts {
        path: path.to_owned(),
        settings,
        live: server.live(),
        certs,
        listeners: server.listeners(),
        http,
        https,
        metrics_listener,
        metrics,
        notifier: notifier.clone(),
        shutdown: shutdown.clone(),
    });
    let changes = if watch {
        Some(edge_gateway::watch::spawn(path, shutdown.clone())?)
    } else {
        None
    };
    tokio::spawn(reloader.run(hangups, changes));
    tokio::spawn(stop_on_signal(shutdown.clone(), notifier.clone()));
    notifier.spawn_watchdog(shutdown.clone().cancelled_owned());
    // Listeners bound, certificate loaded: serving from here on.
    notifier.ready(&status);
    server.run(shutdown).await;
    tracing::info!("Stopped");
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, telling the service manager.
async fn stop_on_signal(shutdown: CancellationToken, notifier: Notifier) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "Shutting down");
    notifier.stopping(&format!("Stopping on {name}: draining requests in flight"));
    shutdown.cancel();
}
