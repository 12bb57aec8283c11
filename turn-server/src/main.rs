//! The standalone `turn-server` command.

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
environment overrides TURN_<SECTION>_<KEY>, e.g. TURN_SERVER_REALM=example.org."
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One relay socket per allocation: the soft limit would cap them.
    match turn_server::fd_limit::raise_to_hard_limit() {
        Ok(l) => tracing::info!(before = l.before, now = l.now, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let config = TurnConfig::load(cli.config.as_deref(), std::env::vars())?;
    let registry = prometheus::Registry::new();
    let service = TurnService::start(&config, &registry, &[])?;
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
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_channel(tx);
    let _ = rx.recv();
    tracing::info!("shutting down");
    service.stop();
    Ok(())
}

/// Delivers SIGINT/SIGTERM as a message (a tiny tokio runtime handles signals).
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        let _ = tx.send(());
    });
}
