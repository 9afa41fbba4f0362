//! The Switchboard chaos suite: starts a real cluster (`switchboard serve` processes on
//! 127.0.0.1 against PostgreSQL), drives clients in many rooms (numbered, acknowledged
//! signaling, and real WebRTC calls), injects faults from a seeded schedule (kill -9,
//! SIGSTOP/SIGCONT, restart, drain, client socket drops, PostgreSQL restart) and checks the
//! invariants: acknowledged messages delivered exactly once and in order, never two owners of
//! a room, every client back within its target, a consistent database, no panic.
//!
//! `chaos short` (the CI suite), `chaos long`, or one scenario by fault kind (`chaos kill`)
//! or `chaos mixed`. Every run prints its seed; `CHAOS_SEED` replays it.

mod client;
mod db;
mod faults;
mod idle;
mod ledger;
mod nodes;
mod owners;
mod peer;
mod report;
mod run;

use anyhow::{Context, Result, bail};
use clap::Parser;
use faults::Kind;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "chaos",
    about = "Kill, freeze, drain and restart a Switchboard cluster under load; check nothing is lost"
)]
struct Args {
    /// `short` (CI), `long`, `mixed`, or one fault kind: kill, freeze, restart, drain,
    /// socket-drop, pg-restart, away-kill.
    #[arg(default_value = "short")]
    target: String,
    /// The schedule's seed (random when not given; every run prints it).
    #[arg(long, env = "CHAOS_SEED")]
    seed: Option<u64>,
    /// Faults per run (default: the suite's).
    #[arg(long)]
    faults: Option<usize>,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Rooms with two message-streaming clients each (default: the suite's).
    #[arg(long)]
    rooms: Option<usize>,
    /// Rooms with a real WebRTC call (default: the suite's).
    #[arg(long)]
    webrtc_rooms: Option<usize>,
    /// Idle rooms beside them, each with a silent participant on every node (a run at size:
    /// the survivors of a fault take thousands of rooms over).
    #[arg(long, default_value_t = 0)]
    idle_rooms: usize,
    /// Milliseconds between two messages of one client.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// The `switchboard` binary (default: next to this one).
    #[arg(long, env = "SWITCHBOARD_BIN")]
    switchboard: Option<PathBuf>,
    /// A PostgreSQL database URL; each run creates its own database beside it.
    #[arg(long, env = "CHAOS_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Shell command that restarts PostgreSQL (default: pg_ctlcluster, when present).
    #[arg(long, env = "CHAOS_PG_RESTART")]
    pg_restart: Option<String>,
    /// Where reports and node logs go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
}

/// One run of a suite: (name, fault kinds, faults, rooms, WebRTC rooms).
type RunPlan = (String, Vec<Kind>, usize, usize, usize);

/// A suite: named runs, each with its fault kinds and size.
fn plan(target: &str) -> Result<Vec<RunPlan>> {
    Ok(match target {
        "short" => vec![("mixed".into(), Kind::ALL.to_vec(), 8, 6, 1)],
        "long" => {
            let mut runs: Vec<_> = Kind::ALL.iter().map(|k| (k.name().to_owned(), vec![*k], 10, 12, 2)).collect();
            runs.push(("mixed".into(), Kind::ALL.to_vec(), 40, 12, 2));
            runs
        }
        "mixed" => vec![("mixed".into(), Kind::ALL.to_vec(), 12, 8, 1)],
        other => match Kind::parse(other) {
            Some(k) => vec![(k.name().to_owned(), vec![k], 6, 8, 1)],
            None => bail!(
                "unknown scenario {other:?}: short, long, mixed, kill, freeze, short-freeze, restart, drain, socket-drop, pg-restart, away-kill"
            ),
        },
    })
}

/// `pg_ctlcluster <version> main restart` when this machine has exactly one cluster.
fn default_pg_restart() -> Option<String> {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let which = std::process::Command::new("sh").args(["-c", "command -v pg_ctlcluster"]).output().ok()?;
    (versions.len() == 1 && which.status.success())
        .then(|| format!("pg_ctlcluster --skip-systemctl-redirect {} main restart", versions[0]))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let binary = match args.switchboard.clone() {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("switchboard"),
    };
    if !binary.exists() {
        bail!("no switchboard binary at {} (build it, or pass --switchboard)", binary.display());
    }
    let pg_restart = args.pg_restart.clone().or_else(default_pg_restart);
    println!("chaos: {} with seed {seed} (replay: CHAOS_SEED={seed})", args.target);
    let mut reports = Vec::new();
    for (i, (name, mut kinds, faults, rooms, webrtc_rooms)) in plan(&args.target)?.into_iter().enumerate() {
        if pg_restart.is_none() && kinds.contains(&Kind::PgRestart) {
            println!("chaos: NOT injecting pg-restart: no way to restart PostgreSQL here (set CHAOS_PG_RESTART)");
            kinds.retain(|k| *k != Kind::PgRestart);
            if kinds.is_empty() {
                continue;
            }
        }
        let opts = run::Options {
            name: name.clone(),
            seed: seed + i as u64,
            kinds,
            faults: args.faults.unwrap_or(faults),
            nodes: args.nodes.max(2),
            rooms: args.rooms.unwrap_or(rooms),
            webrtc_rooms: args.webrtc_rooms.unwrap_or(webrtc_rooms),
            idle_rooms: args.idle_rooms,
            interval: Duration::from_millis(args.interval_ms.max(10)),
            binary: binary.clone(),
            database_url: args.database_url.clone(),
            out_dir: args.out.clone(),
            pg_restart: pg_restart.clone(),
        };
        println!(
            "chaos: run {name} (seed {}): {} faults, {} nodes, {} rooms + {} WebRTC calls",
            opts.seed, opts.faults, opts.nodes, opts.rooms, opts.webrtc_rooms
        );
        let report = run::run(&opts).await.with_context(|| format!("run {name} (seed {}) broke off", opts.seed))?;
        let path = args.out.join(format!("{name}-{}.json", opts.seed));
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("chaos: report {}", path.display());
        reports.push(report);
    }
    print!("{}", report::table(&reports));
    println!("replay: CHAOS_SEED={seed} chaos {}", args.target);
    if reports.iter().all(|r| r.passed) { Ok(()) } else { bail!("an invariant broke (seed {seed})") }
}
