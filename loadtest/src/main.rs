//! `loadtest`: load tests for the SFU (`run`) and its TURN relay (`turn`).
//! Exit status: 0 pass, 1 could not run, 2 the run failed its checks
//! (integrity errors or a threshold given on the command line).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use loadtest::report::Thresholds;
use loadtest::runner::{self, RunOptions};
use loadtest::scenario::Scenario;
use loadtest::turn::driver::{self, Credentials, TurnOptions};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load tests for the SFU and its TURN relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulated participants with SFrame-encrypted media against an SFU.
    Run(Box<RunArgs>),
    /// Allocations, permissions, channels and ChannelData against a TURN server.
    Turn(Box<TurnArgs>),
}

#[derive(Args)]
struct TurnArgs {
    /// The TURN server's UDP address.
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    /// Allocations to open and hold.
    #[arg(long, default_value_t = 1000)]
    allocations: usize,
    /// Allocations started per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds of ChannelData traffic once the allocations are up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// ChannelData packets per second per allocation (0: only hold).
    #[arg(long, default_value_t = 10.0)]
    pps: f64,
    /// ChannelData payload bytes.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Long-term credentials: username (with --password).
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// Long-term credentials: password.
    #[arg(long, env = "LOADTEST_TURN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// TURN REST shared secret (one username per allocation).
    #[arg(
        long,
        env = "LOADTEST_TURN_SECRET",
        hide_env_values = true,
        conflicts_with = "user"
    )]
    secret: Option<String>,
    /// Where the echo peer listens (the server must be allowed to relay there).
    #[arg(long, default_value = "127.0.0.1:0")]
    peer_bind: SocketAddr,
    /// All clients on 127.0.0.1 instead of spread over 127.0.0.0/8.
    #[arg(long)]
    no_spread: bool,
    /// The server's process id (CPU seconds and RSS from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Fail if loss exceeds this many percent.
    #[arg(long)]
    max_loss: Option<f64>,
    /// Write the summary as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

fn turn(a: &TurnArgs) -> anyhow::Result<bool> {
    let credentials = match (&a.user, &a.password, &a.secret) {
        (Some(user), Some(password), _) => Credentials::LongTerm {
            user: user.clone(),
            password: password.clone(),
        },
        (None, _, Some(secret)) => Credentials::Rest {
            secret: secret.clone(),
        },
        _ => anyhow::bail!("give --user and --password, or --secret"),
    };
    let o = TurnOptions {
        server: a.server,
        allocations: a.allocations,
        rate: a.rate,
        duration_secs: a.duration,
        pps: a.pps,
        size: a.size,
        threads: a.threads,
        credentials,
        peer_bind: a.peer_bind,
        spread_sources: !a.no_spread,
        server_pid: a.server_pid,
        max_loss_pct: a.max_loss,
        quiet: a.quiet,
    };
    let s = driver::run(&o)?;
    print!("{}", driver::table(&s));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&s)?)?;
    }
    Ok(s.violations.is_empty())
}

#[derive(Args)]
struct RunArgs {
    /// A TOML scenario (configs/loadtest/*.toml); flags override its values.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// The SFU's base URL (http://HOST:7880, https://HOST, ws://HOST:7880) or
    /// its signaling WebSocket (ws://HOST:7880/ws).
    #[arg(long)]
    url: Option<String>,
    /// HS256 key of the SFU (its auth.key); default: the development key.
    #[arg(long, env = "LOADTEST_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Scenario name: shown in reports, and rooms are named
    /// `loadtest-NAME-0`, `-1`, …, so processes with the same name share rooms.
    #[arg(long)]
    name: Option<String>,
    /// Rooms.
    #[arg(long)]
    rooms: Option<u32>,
    /// Publishers per room.
    #[arg(long)]
    publishers: Option<u32>,
    /// Receive-only participants per room.
    #[arg(long)]
    subscribers: Option<u32>,
    /// Publishers per room that another loadtest process runs in the same
    /// rooms (same scenario name): this process's receivers expect their
    /// tracks too.
    #[arg(long)]
    remote_publishers: Option<u32>,
    /// Prefix of participant identities (default `lt-`): give each process
    /// that joins the same rooms its own.
    #[arg(long)]
    identity_prefix: Option<String>,
    /// Participants started per second.
    #[arg(long)]
    join_rate: Option<f64>,
    /// Seconds of media after the last participant started.
    #[arg(long)]
    duration: Option<f64>,
    /// Video preset: 180p, 360p, 720p or none.
    #[arg(long)]
    video: Option<String>,
    /// Send video as three simulcast layers q/h/f (the default; overrides
    /// `simulcast = false` in a scenario).
    #[arg(long, conflicts_with = "no_simulcast")]
    simulcast: bool,
    /// Send video as one layer.
    #[arg(long)]
    no_simulcast: bool,
    /// No audio track.
    #[arg(long)]
    no_audio: bool,
    /// Send frames unencrypted (content still verified).
    #[arg(long)]
    no_e2ee: bool,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Media only through a TURN relay: `sfu` (the relay and credentials in
    /// joined.ice_servers) or turn:HOST:PORT.
    #[arg(long)]
    via_turn: Option<String>,
    /// TURN username for --via-turn (default: from joined.ice_servers).
    #[arg(long)]
    turn_username: Option<String>,
    /// TURN password for --via-turn (default: from joined.ice_servers).
    #[arg(long, env = "LOADTEST_TURN_PASSWORD", hide_env_values = true)]
    turn_password: Option<String>,
    /// Write the summary as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an HTML report with SVG charts.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Fail if packet or frame loss exceeds this many percent.
    #[arg(long)]
    max_loss: Option<f64>,
    /// Fail if p99 end-to-end latency exceeds this many milliseconds.
    #[arg(long)]
    max_p99_latency: Option<f64>,
    /// Fail if fewer than this percent of the expected tracks are received.
    #[arg(long)]
    min_tracks: Option<f64>,
    /// The SFU's process id (CPU seconds and RSS from /proc).
    #[arg(long)]
    sfu_pid: Option<u32>,
    /// The SFU's metrics URL (forwarded-packet counter), e.g. http://127.0.0.1:7880/metrics.
    #[arg(long)]
    sfu_metrics: Option<String>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

fn scenario(a: &RunArgs) -> anyhow::Result<Scenario> {
    let mut s = match &a.scenario {
        Some(p) => Scenario::from_file(p)?,
        None => Scenario::default(),
    };
    macro_rules! set {
        ($field:ident, $value:expr) => {
            if let Some(v) = $value.clone() {
                s.$field = v;
            }
        };
    }
    set!(name, a.name);
    set!(url, a.url);
    set!(token_secret, a.token_secret);
    set!(rooms, a.rooms);
    set!(publishers, a.publishers);
    set!(subscribers, a.subscribers);
    set!(remote_publishers, a.remote_publishers);
    set!(identity_prefix, a.identity_prefix);
    set!(join_rate, a.join_rate);
    set!(duration_secs, a.duration);
    set!(video, a.video);
    set!(threads, a.threads);
    set!(via_turn, a.via_turn);
    set!(turn_username, a.turn_username);
    set!(turn_password, a.turn_password);
    s.simulcast = (s.simulcast || a.simulcast) && !a.no_simulcast;
    s.audio &= !a.no_audio;
    s.e2ee &= !a.no_e2ee;
    s.validate()?;
    Ok(s)
}

fn run(a: &RunArgs) -> anyhow::Result<bool> {
    let s = scenario(a)?;
    let opts = RunOptions {
        thresholds: Thresholds {
            max_loss_pct: a.max_loss,
            max_p99_latency_ms: a.max_p99_latency,
            min_tracks_pct: a.min_tracks,
        },
        sfu_pid: a.sfu_pid,
        sfu_metrics: a.sfu_metrics.clone(),
        quiet: a.quiet,
    };
    let summary = runner::run(&s, &opts)?;
    print!("{}", summary.table());
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&summary)?)?;
    }
    if let Some(p) = &a.report {
        std::fs::write(p, summary.html())?;
    }
    Ok(summary.violations.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(a) => run(a),
        Command::Turn(a) => turn(a),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(1)
        }
    }
}
