//! The `sfu` command.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sfu::auth::{parse_ttl, TokenAuthority};
use sfu::config::{Config, LogFormat};
use sfu::server::Server;

/// Payload-blind selective forwarding unit for end-to-end encrypted group calls.
///
/// With no arguments it serves on embedded defaults: HTTP (signaling, WHIP/WHEP,
/// metrics) on 127.0.0.1:7880, media on UDP 127.0.0.1:7882 and ICE-TCP
/// 127.0.0.1:7881, in development mode (no token key).
#[derive(Parser)]
#[command(
    version,
    after_help = "Configuration: --config FILE (TOML, see configs/sfu.toml), then \
environment overrides SFU_<SECTION>_<KEY>, e.g. SFU_HTTP_LISTEN=0.0.0.0:7880, \
SFU_AUTH_KEY=secret, SFU_MEDIA_ANNOUNCE='[\"203.0.113.7\"]'."
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
    /// Run the server (the default).
    Serve,
    /// Mint a room token signed with the configured auth.key.
    ///
    /// Example: sfu token --room standup --identity alice --ttl 1h
    Token {
        /// Room the token admits to.
        #[arg(long)]
        room: String,
        /// Participant identity (a second join with it replaces the first).
        #[arg(long)]
        identity: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Validity: 90s, 30m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
        /// Deny publishing.
        #[arg(long)]
        no_publish: bool,
        /// Deny subscribing.
        #[arg(long)]
        no_subscribe: bool,
        /// The room's operator: may delete any of the room's shared files.
        #[arg(long)]
        room_admin: bool,
    },
    /// Print the effective configuration (defaults + file + environment) as TOML.
    Config,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => serve(config),
        Cmd::Token {
            room,
            identity,
            name,
            ttl,
            no_publish,
            no_subscribe,
            room_admin,
        } => {
            let auth = TokenAuthority::new(&config.auth.key);
            if auth.is_development() {
                eprintln!("warning: no auth.key configured: this token is only accepted by servers in development mode");
            }
            let mut grants = TokenAuthority::grants(&room, &identity, ttl);
            grants.name = name;
            grants.can_publish = !no_publish;
            grants.can_subscribe = !no_subscribe;
            grants.room_admin = room_admin;
            println!("{}", auth.mint(&grants)?);
            Ok(())
        }
        Cmd::Config => {
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("bad log.level {:?}", config.log.level))?;
    // Colours only on a terminal, not in log files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
    // WebSockets, ICE-TCP connections and the embedded relay's sockets all
    // need descriptors; the usual soft limit of 1024 would cap a busy server.
    match platform::fd_limit::raise_to_hard_limit() {
        Ok(l) => tracing::info!(before = l.before, now = l.now, "open-file limit"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = Server::start(config).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        server.stop().await;
        Ok(())
    })
}
