//! One chaos run: a fresh database, an N-node cluster, clients in many rooms, the seeded
//! fault schedule injected one fault at a time, then the invariants checked and a report.

use crate::client::{self, Command, Handle};
use crate::faults::{Fault, Kind, schedule};
use crate::idle::IdleClients;
use crate::ledger::Ledger;
use crate::nodes::{Cluster, Launch};
use crate::owners::Owners;
use crate::report::{FaultRecord, Report};
use crate::{db, peer};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub name: String,
    pub seed: u64,
    pub kinds: Vec<Kind>,
    pub faults: usize,
    pub nodes: usize,
    pub rooms: usize,
    pub webrtc_rooms: usize,
    pub idle_rooms: usize,
    pub interval: Duration,
    pub binary: PathBuf,
    pub database_url: String,
    pub out_dir: PathBuf,
    pub pg_restart: Option<String>,
}

/// The cluster's settings for a chaos run: the defaults for failure detection and leases (the
/// recovery targets hold on them). A longer resume grace than the default, so that a client
/// away through several faults still resumes; no embedded TURN server (off in a cluster
/// anyway): peers connect on loopback directly, and three nodes on one machine would share
/// its port.
const CONFIG: &str = "[rooms]\nresume_grace = \"30s\"\n[turn]\nenabled = false\n";

pub async fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let work_dir = opts.out_dir.join(format!("{}-{}", opts.name, opts.seed));
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir)?;
    let config = work_dir.join("chaos.toml");
    std::fs::write(&config, CONFIG)?;
    let database_url = db::fresh(&opts.database_url, opts.seed).await?;
    let launch =
        Launch { binary: opts.binary.clone(), database_url: database_url.clone(), config, work_dir: work_dir.clone() };
    let mut cluster = Cluster::start(launch, opts.nodes).await?;
    let ledger = Arc::new(Ledger::new());
    let stop_sending = Arc::new(AtomicBool::new(false));
    let idle = match opts.idle_rooms {
        0 => None,
        n => {
            let joined = Instant::now();
            let idle = IdleClients::start(&opts.binary, &cluster.directory.live(), n, opts.seed).await?;
            println!(
                "  {n} idle rooms joined through {} nodes in {:.1} s",
                idle.processes(),
                joined.elapsed().as_secs_f64()
            );
            Some(idle)
        }
    };

    // Two clients per room, each streaming numbered offers to the other.
    let mut clients: Vec<Handle> = Vec::new();
    // Recovery is measured on the streaming clients (WebRTC peers prove theirs by renegotiating).
    let mut streaming: Vec<String> = Vec::new();
    for r in 0..opts.rooms {
        let room = format!("chaos-{}-{r}", opts.seed);
        for (me, other) in [("a", "b"), ("b", "a")] {
            let spec = client::Spec {
                user: format!("r{r}{me}"),
                partner: format!("r{r}{other}"),
                room: room.clone(),
                seed: opts.seed ^ ((r as u64) << 8) ^ u64::from(me == "a"),
            };
            streaming.push(spec.user.clone());
            let (handle, link) = client::spawn(spec, cluster.directory.clone(), ledger.clone());
            clients.push(handle);
            tokio::spawn(stream(link, opts.interval, stop_sending.clone()));
        }
    }
    // Rooms with real WebRTC peers keeping a data channel open through everything.
    let mut calls = Vec::new();
    for r in 0..opts.webrtc_rooms {
        let room = format!("chaos-{}-webrtc-{r}", opts.seed);
        let (a, b) = (format!("w{r}a"), format!("w{r}b"));
        let (ha, la) = client::spawn(
            client::Spec {
                user: a.clone(),
                partner: b.clone(),
                room: room.clone(),
                seed: opts.seed ^ 0xa000 ^ r as u64,
            },
            cluster.directory.clone(),
            ledger.clone(),
        );
        let (hb, lb) = client::spawn(
            client::Spec { user: b, partner: a, room, seed: opts.seed ^ 0xb000 ^ r as u64 },
            cluster.directory.clone(),
            ledger.clone(),
        );
        clients.push(ha);
        clients.push(hb);
        calls.push(peer::Call::start(la, lb).await.with_context(|| format!("WebRTC call {r} did not connect"))?);
    }

    let owners = Arc::new(Owners::default());
    let stop_watching = Arc::new(tokio::sync::Notify::new());
    let watcher = tokio::spawn(owners.clone().watch(
        cluster.directory.clone(),
        Duration::from_millis(200),
        stop_watching.clone(),
    ));

    // Every client is in and talking before the first fault.
    wait_all_back(&ledger, Instant::now(), &streaming, Duration::from_secs(30)).await.context("warm-up")?;
    let warm = Instant::now();

    let plan = schedule(opts.seed, &opts.kinds, opts.faults, opts.nodes, clients.len());
    let mut records = Vec::new();
    for (n, fault) in plan.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(fault.pause_ms)).await;
        ledger.note(format!(
            "fault {}: {} {:?}",
            n + 1,
            fault.kind.name(),
            fault.node.map(|i| cluster.nodes[i].id.clone())
        ));
        let record = inject(&mut cluster, &clients, &streaming, &ledger, fault, opts, &mut calls).await?;
        println!(
            "  fault {:>2} {:<11} {:<4} all back in {} (target {:?})",
            n + 1,
            fault.kind.name(),
            record.node.clone().unwrap_or_default(),
            record.all_back_s.map_or("never".to_owned(), |s| format!("{s:.2} s")),
            fault.kind.target()
        );
        records.push(record);
    }
    let faults_done = Instant::now();

    // Quiet down: stop sending, let every acknowledgement and delivery arrive.
    stop_sending.store(true, Ordering::SeqCst);
    for call in &mut calls {
        call.stop().await;
    }
    settle(&ledger, Duration::from_secs(15)).await;
    let totals = ledger.settle();
    let webrtc: Vec<_> = calls.iter().map(peer::Call::summary).collect();
    for call in calls {
        call.close().await;
    }
    for handle in &clients {
        let (done, wait) = tokio::sync::oneshot::channel();
        if handle.commands.send(Command::Leave(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
    }
    stop_watching.notify_one();
    let _ = watcher.await;

    let mut invariants = Vec::new();
    let delivery_ok = totals.lost == 0 && totals.duplicated == 0 && totals.out_of_order == 0;
    invariants.push(("acknowledged messages delivered exactly once, in order".to_owned(), delivery_ok));
    let (two_owners, polls) = owners.check();
    invariants
        .push((format!("at most one owner per room ({polls} observations of every node)"), two_owners.is_empty()));
    let late: Vec<&FaultRecord> = records.iter().filter(|r| !r.within_target).collect();
    invariants.push(("every client back within its fault's target".to_owned(), late.is_empty()));
    // A session whose `leave` was lost still ends when its grace period (30 s here) runs out.
    let db_problems = db::check(&database_url, &ledger.sessions(), Duration::from_secs(40)).await?;
    invariants.push(("call sessions and events consistent in the database".to_owned(), db_problems.is_empty()));
    let panics: Vec<String> = cluster
        .logs()
        .iter()
        .flat_map(|(id, log)| log.lines().filter(|l| l.contains("panicked at")).map(move |l| format!("{id}: {l}")))
        .collect();
    invariants.push(("no panic in any node's log".to_owned(), panics.is_empty()));
    let webrtc_ok = webrtc.iter().all(|w| w.ok);
    if !webrtc.is_empty() {
        invariants.push(("WebRTC data channels kept working, renegotiations answered".to_owned(), webrtc_ok));
    }
    let client_problems = ledger.violations();
    invariants
        .push(("clients saw no protocol violation (seq, sessions, errors)".to_owned(), client_problems.is_empty()));

    let mut violations = client_problems;
    violations.extend(two_owners);
    violations.extend(db_problems);
    violations.extend(panics);
    for r in &late {
        violations.push(format!(
            "{} on {:?}: clients back after {:?} s (target {:?})",
            r.kind.name(),
            r.node,
            r.all_back_s,
            r.kind.target()
        ));
    }
    for w in &webrtc {
        if !w.ok {
            violations.push(format!("WebRTC call: {}", json!(w)));
        }
    }
    drop(idle);
    cluster.save_logs(&work_dir.join("logs"))?;
    cluster.stop_all();
    let passed = invariants.iter().all(|(_, ok)| *ok);
    if passed {
        let _ = db::drop_database(&opts.database_url, &database_url).await;
    }
    Ok(Report {
        scenario: opts.name.clone(),
        seed: opts.seed,
        passed,
        nodes: opts.nodes,
        rooms: opts.rooms,
        webrtc_rooms: opts.webrtc_rooms,
        idle_rooms: opts.idle_rooms,
        clients: clients.len(),
        duration_s: started.elapsed().as_secs_f64(),
        faults_s: faults_done.duration_since(warm).as_secs_f64(),
        schedule: plan,
        faults: records,
        totals,
        counters: ledger.counters().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        invariants,
        violations,
        webrtc,
        ownerships_seen: owners.ownerships(),
        logs: work_dir.join("logs"),
        database: (!passed).then_some(database_url),
        journal: if passed { Vec::new() } else { ledger.journal() },
    })
}

/// A numbered message stream: an offer every `interval` until told to stop.
async fn stream(link: client::AppLink, interval: Duration, stop: Arc<AtomicBool>) {
    let client::AppLink { outgoing, mut incoming } = link;
    // What arrives is already in the ledger.
    tokio::spawn(async move { while incoming.recv().await.is_some() {} });
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if outgoing.send(json!({"type": "offer", "sdp": format!("v=0 chaos {n}")})).is_err() {
            return;
        }
        n += 1;
        tokio::time::sleep(interval).await;
    }
}

/// Injects one fault, waits until every client is back (bounded), and undoes what needs
/// undoing (a killed node is started again, a frozen one thawed) so that the next fault
/// starts from a whole cluster.
async fn inject(
    cluster: &mut Cluster,
    clients: &[Handle],
    streaming: &[String],
    ledger: &Ledger,
    fault: &Fault,
    opts: &Options,
    calls: &mut [peer::Call],
) -> Result<FaultRecord> {
    let mut fault = fault.clone();
    if fault.busiest {
        fault.node = cluster.busiest().await.or(fault.node);
    }
    let fault = &fault;
    let node = fault.node.map(|i| cluster.nodes[i].id.clone());
    // Clients connected to the node hit must notice and reconnect; the others only wait for
    // their room (if it lived there) to serve again.
    let on_node: Vec<String> = fault
        .node
        .and_then(|i| cluster.nodes[i].http)
        .map(|addr| ledger.clients_of(&addr.to_string()))
        .unwrap_or_default();
    let budget = (fault.kind.target() * 4).max(Duration::from_secs(20));
    let at = Instant::now();
    match fault.kind {
        Kind::Kill => cluster.kill(fault.node.unwrap_or(0)),
        Kind::Freeze => cluster.freeze(fault.node.unwrap_or(0)),
        Kind::ShortFreeze => {
            let i = fault.node.unwrap_or(0);
            cluster.freeze(i);
            tokio::time::sleep(Duration::from_millis(fault.hold_ms.unwrap_or(1600))).await;
            cluster.thaw(i);
        }
        Kind::Restart => {
            let i = fault.node.unwrap_or(0);
            cluster.kill(i);
            cluster.restart(i).await?;
        }
        Kind::Drain => cluster.drain(fault.node.unwrap_or(0)).await?,
        Kind::SocketDrop => {
            for &c in &fault.clients {
                let _ = clients[c].commands.send(Command::DropSocket);
            }
        }
        Kind::AwayKill => {
            let hold = Duration::from_millis(fault.hold_ms.unwrap_or(1500));
            for &c in &fault.clients {
                let _ = clients[c].commands.send(Command::Away(hold));
            }
            // Their partners keep sending while they are away (every 100 ms); the node dies
            // with a few acknowledged messages kept for them.
            tokio::time::sleep(hold / 2).await;
            cluster.kill(fault.node.unwrap_or(0));
        }
        Kind::PgRestart => {
            let Some(cmd) = &opts.pg_restart else { bail!("no command to restart PostgreSQL") };
            let status = tokio::process::Command::new("sh").arg("-c").arg(cmd).status().await?;
            if !status.success() {
                bail!("`{cmd}` failed: {status}");
            }
        }
    }
    // Every client talking again after the injection, and still a second later (some faults
    // bite late); then each client's longest silence since the fault is its recovery time.
    let back = match wait_all_back(ledger, Instant::now(), streaming, budget).await {
        Ok(_) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            wait_all_back(ledger, Instant::now(), streaming, budget).await
        }
        failed => failed,
    };
    let recovery = ledger.outage(at, Instant::now(), streaming);
    // Undo, so that the next fault starts from a whole cluster.
    match fault.kind {
        Kind::Kill | Kind::Drain | Kind::AwayKill => cluster.restart(fault.node.unwrap_or(0)).await?,
        Kind::Freeze => {
            let hold = Duration::from_millis(fault.hold_ms.unwrap_or(3000));
            if let Some(rest) = hold.checked_sub(at.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            cluster.thaw(fault.node.unwrap_or(0));
            cluster.until_formed(Duration::from_secs(30)).await?;
        }
        Kind::ShortFreeze => cluster.until_formed(Duration::from_secs(30)).await?,
        _ => {}
    }
    // The WebRTC peers renegotiate once signaling is back.
    let mut renegotiated = Vec::new();
    for call in calls.iter_mut() {
        renegotiated.push(call.renegotiate().await.is_ok());
    }
    let mut per_client: Vec<f64> = recovery.values().copied().collect();
    let all_back_s = back.ok().map(|_| per_client.iter().copied().fold(0.0, f64::max));
    let rooms_back_s =
        recovery.iter().filter(|(client, _)| !on_node.contains(client)).map(|(_, s)| *s).fold(0.0, f64::max);
    per_client.sort_by(f64::total_cmp);
    Ok(FaultRecord {
        kind: fault.kind,
        node,
        clients: fault.clients.len(),
        at_s: at.duration_since(ledger.started).as_secs_f64(),
        within_target: all_back_s.is_some_and(|s| s <= fault.kind.target().as_secs_f64()),
        all_back_s,
        rooms_back_s,
        client_recovery_s: per_client,
        renegotiated,
    })
}

/// Waits until every client has had a message sent at or after `at` acknowledged; returns
/// how long that took from `at`.
async fn wait_all_back(ledger: &Ledger, at: Instant, clients: &[String], within: Duration) -> Result<Duration> {
    loop {
        let now = Instant::now();
        let recovery = ledger.recovery(at, now, clients);
        let back: Vec<f64> = recovery.values().flatten().copied().collect();
        if back.len() >= clients.len() {
            return Ok(Duration::from_secs_f64(back.iter().copied().fold(0.0, f64::max)));
        }
        if now.duration_since(at) > within {
            let missing: Vec<&String> = recovery.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
            bail!("{} of {} clients back within {within:?}; not back: {missing:?}", back.len(), clients.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until nothing is on its way any more, or it stops changing for two seconds
/// (messages of a session that had to be given up are never acknowledged), bounded by `within`.
async fn settle(ledger: &Ledger, within: Duration) {
    let started = Instant::now();
    let mut last = usize::MAX;
    let mut stable_since = Instant::now();
    while started.elapsed() < within {
        let now = ledger.outstanding();
        if now == 0 {
            return;
        }
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
