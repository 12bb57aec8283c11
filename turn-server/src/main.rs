//! The standalone `turn-server` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use turn_server::config::TurnConfig;
use turn_server::credentials::mint_rest_credentials;
use turn_server::service::{serve_metrics, TurnService};

/// TURN relay (RFC 8656): UDP, TCP and TLS listeners, long-term and REST
/// credentials, deny-by-default peer policy, quotas.
#[derive(Parser)]
#[command(
    version,
    after_help = "Configuration: --config FILE (TOML, see configs/turn-server.toml), then \
environment overrides TURN_<SECTION>_<KEY>, e.g. TURN_SERVER_REALM=example.org.\n\
Signals: SIGHUP reloads [auth] and the TLS certificate files without dropping \
allocations; SIGINT or SIGTERM shuts down."
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay (the default).
    Serve,
    /// Mint TURN REST credentials (coturn use-auth-secret compatible).
    ///
    /// Example: turn-server credentials --secret S --user alice --ttl 3600
    Credentials {
        /// The shared secret (one of auth.secrets).
        #[arg(long)]
        secret: String,
        /// The user the credentials are for.
        #[arg(long)]
        user: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::Credentials { secret, user, ttl }) = &cli.command {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let (username, password) =
            mint_rest_credentials(secret.as_bytes(), user, Duration::from_secs(*ttl), now);
        println!("username={username}\npassword={password}");
        return Ok(());
    }
    // Colours only on a terminal, not in log files or journald.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One relay socket per allocation: the soft limit would cap them.
    match platform::fd_limit::raise_to_hard_limit() {
        Ok(l) => tracing::info!(before = l.before, now = l.now, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    // Early, so a SIGHUP during the start is queued rather than fatal.
    let (tx, rx) = std::sync::mpsc::channel();
    signal_channel(tx);
    let config = TurnConfig::load(cli.config.as_deref(), std::env::vars())?;
    let registry = prometheus::Registry::new();
    let mut service = TurnService::start(&config, &registry, &[])?;
    if let Some(addr) = config.metrics.listen {
        serve_metrics(addr, registry.clone())?;
    }
    tracing::info!(
        udp = ?service.udp_addrs,
        tcp = ?service.tcp_addrs,
        tls = ?service.tls_addrs,
        realm = %config.server.realm,
        "turn-server listening"
    );
    // SIGHUP reloads; SIGINT/SIGTERM (or a lost signal thread) stop.
    while let Ok(Signal::Reload) = rx.recv() {
        match service.reload_from(cli.config.as_deref(), std::env::vars()) {
            Ok(r) => {
                tracing::info!(
                    users = r.users,
                    secrets = r.secrets,
                    certificate = r.certificate,
                    "configuration reloaded"
                );
                if !r.needs_restart.is_empty() {
                    tracing::warn!(
                        sections = ?r.needs_restart,
                        "changed settings that take effect only after a restart"
                    );
                }
            }
            Err(e) => tracing::error!("reload failed, the running configuration stays: {e:#}"),
        }
    }
    tracing::info!("shutting down");
    service.stop();
    Ok(())
}

/// What a signal asks of the server.
enum Signal {
    /// SIGHUP: read the configuration again.
    Reload,
    /// SIGINT or SIGTERM: shut down.
    Stop,
}

/// Delivers SIGHUP, SIGINT and SIGTERM as messages (a tiny tokio runtime
/// handles signals).
fn signal_channel(tx: std::sync::mpsc::Sender<Signal>) {
    use tokio::signal::unix::{signal, SignalKind};
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let (Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            loop {
                let signal = tokio::select! {
                    _ = tokio::signal::ctrl_c() => Signal::Stop,
                    _ = term.recv() => Signal::Stop,
                    _ = hup.recv() => Signal::Reload,
                };
                let stop = matches!(signal, Signal::Stop);
                if tx.send(signal).is_err() || stop {
                    return;
                }
            }
        });
    });
}
