//! The cluster at scale: three nodes (or more) on this machine, thousands of rooms with one
//! participant on every node, and what that costs and how it fails over.
//!
//! One client process per node holds that node's connections (a process may open 20,000 files
//! here, fewer than the run's connections), each joining every room once, so that each room has
//! a participant on every node. Measured: join latency while the rooms fill, ownership writes
//! per second and resident memory per node once they are idle, and, after `kill -9` of one node
//! and then SIGSTOP of another, how long until no room with participants is left without an
//! owner (the database's view: `orphaned_rooms`).

use super::dialer::Dialer;
use super::node::BenchNode;
use super::relay::round2;
use super::report::{Latencies, Run};
use crate::store::Store;
use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `bench scale-clients`: joins `rooms` rooms on `server` as users of `tag`, prints one JSON
/// line (joined, failed, p50 and p99 of the joins), then keeps the connections, reading what
/// arrives, until its standard input closes.
pub async fn clients(
    server: SocketAddr,
    rooms: usize,
    tag: &str,
    sources: usize,
    room_prefix: &str,
    secret: &str,
) -> Result<()> {
    super::node::raise_fd_limit(250_000);
    let dial = Arc::new(Dialer::with_secret(server, sources, secret));
    let started = Instant::now();
    let joined: Vec<Result<(super::dialer::Joined, Duration)>> = futures_util::stream::iter(0..rooms)
        .map(|r| {
            let dial = dial.clone();
            let user = format!("{tag}-{r}");
            async move {
                let asked = Instant::now();
                let j = dial.join(&user, &format!("{room_prefix}{r}")).await?;
                Ok((j, asked.elapsed()))
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let mut latencies = Latencies::default();
    let mut conns = Vec::new();
    let mut failed = 0;
    let mut why: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for j in joined {
        match j {
            Ok((j, took)) => {
                latencies.push(took);
                conns.push(j.conn);
            }
            Err(e) => {
                failed += 1;
                let text = format!("{e:#}");
                let field = |name: &str| {
                    let start = format!("\"{name}\":\"");
                    text.split(start.as_str()).nth(1).and_then(|r| r.split('"').next()).map(str::to_owned)
                };
                let reason = match (field("code"), field("message")) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code,
                    _ => text.clone(),
                };
                *why.entry(reason.chars().take(120).collect()).or_default() += 1;
            }
        }
    }
    if !why.is_empty() {
        eprintln!("{tag}: joins that failed, by error: {why:?}");
    }
    let p = latencies.summary();
    let line = serde_json::json!({
        "joined": conns.len(), "failed": failed, "p50_us": p.p50_us, "p99_us": p.p99_us,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{line}");
    std::io::stdout().flush()?;
    // Keep reading so that no socket buffer fills; stop when the parent closes stdin.
    for conn in conns {
        tokio::spawn(conn.drain());
    }
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().lock().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await?;
    Ok(())
}

/// Reads one node's `switchboard_ownership_writes_total` (both tables).
async fn ownership_writes(http: &reqwest::Client, node: &BenchNode) -> Result<f64> {
    let text = http.get(format!("http://{}/metrics", node.addr)).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("switchboard_ownership_writes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Rooms each node serves, from its `/api/cluster` entry.
async fn rooms_of(http: &reqwest::Client, node: &BenchNode) -> Result<u64> {
    let v: serde_json::Value = http.get(format!("http://{}/api/cluster", node.addr)).send().await?.json().await?;
    Ok(v["members"][0]["rooms"].as_u64().unwrap_or(0))
}

/// How long until the database shows that `node` owns no room and no room with participants
/// is without an owner (bounded by `limit`): every room of the failed node serves elsewhere.
async fn until_rehomed(store: &Store, node: &str, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let theirs = store.owned_by(node).await.map_err(|e| anyhow!("{e}"))?;
        let orphans = store.orphaned_rooms("", 1).await.map_err(|e| anyhow!("{e}"))?;
        if theirs == 0 && orphans.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(anyhow!("rooms still orphaned {limit:?} after the fault"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long until the `survivors` run `rooms` room actors between them (bounded by `limit`).
async fn until_serving(
    http: &reqwest::Client,
    survivors: &[BenchNode],
    rooms: usize,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let mut serving = 0;
        for node in survivors {
            serving += rooms_of(http, node).await.unwrap_or(0);
        }
        if serving >= rooms as u64 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(anyhow!("{serving} of {rooms} rooms running {limit:?} after the fault"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run: `nodes` nodes, `rooms` rooms with one participant per node.
pub async fn scale(nodes: usize, rooms: usize, sources: usize, serve: &[String]) -> Result<Run> {
    let url = serve
        .iter()
        .find(|a| a.starts_with("postgres"))
        .cloned()
        .ok_or_else(|| anyhow!("a scale run needs PostgreSQL: add -- --database-url postgres://..."))?;
    let nodes = nodes.max(3);
    let mut started = Vec::new();
    for i in 1..=nodes {
        let mut args = serve.to_vec();
        args.extend(["--node-id".to_owned(), format!("s{i}"), "--cluster-addr".into(), "127.0.0.1:0".into()]);
        if let Some(seed) = started.first().and_then(|n: &BenchNode| n.cluster_addr.clone()) {
            args.extend(["--seeds".to_owned(), seed]);
        }
        started.push(BenchNode::start(&args)?);
    }
    let http = reqwest::Client::new();
    // Formed: every node sees all the others up.
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &started {
        loop {
            let v: serde_json::Value =
                http.get(format!("http://{}/api/cluster", node.addr)).send().await?.json().await?;
            let up = v["members"].as_array().map_or(0, |m| m.iter().filter(|x| x["state"] == "up").count());
            if up == nodes {
                break;
            }
            if Instant::now() > deadline {
                return Err(anyhow!("the cluster did not form: {v}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut children = Vec::new();
    let fill = Instant::now();
    for (i, node) in started.iter().enumerate() {
        let child = Command::new(std::env::current_exe()?)
            .args(["bench", "scale-clients", "--server", &node.addr.to_string(), "--rooms", &rooms.to_string()])
            .args(["--tag", &format!("c{i}"), "--sources", &sources.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a client process")?;
        children.push(child);
    }
    let mut joined = 0u64;
    let mut failed = 0u64;
    let mut p50 = 0u64;
    let mut p99 = 0u64;
    for child in &mut children {
        let out = child.stdout.take().context("client stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("client said {line:?}"))?;
        joined += v["joined"].as_u64().unwrap_or(0);
        failed += v["failed"].as_u64().unwrap_or(0);
        p50 = p50.max(v["p50_us"].as_u64().unwrap_or(0));
        p99 = p99.max(v["p99_us"].as_u64().unwrap_or(0));
    }
    let filled_in = fill.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Idle: what ownership costs, and what each node holds.
    let before: Vec<f64> =
        futures_util::future::try_join_all(started.iter().map(|n| ownership_writes(&http, n))).await?;
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let after: Vec<f64> =
        futures_util::future::try_join_all(started.iter().map(|n| ownership_writes(&http, n))).await?;
    let writes: f64 = after.iter().zip(&before).map(|(a, b)| a - b).sum::<f64>() / window.as_secs_f64();
    let mut rss = Vec::new();
    let mut hosted = Vec::new();
    for node in &started {
        rss.push(node.rss_kib()? as f64 / 1024.0);
        hosted.push(rooms_of(&http, node).await? as f64);
    }
    let store = Store::open(&url, 2, "scale-bench").await?;
    // kill -9 of the last node, then SIGSTOP of the one before: time until every room with
    // participants has an owner again.
    // Also timed: until the survivors' room actors run all the rooms again.
    let killed = started.len() - 1;
    let killed_id = format!("s{}", killed + 1);
    started[killed].signal("KILL");
    let (after_kill, kill_serving) = tokio::join!(
        until_rehomed(&store, &killed_id, Duration::from_secs(60)),
        until_serving(&http, &started[..killed], rooms, Duration::from_secs(60)),
    );
    let frozen = started.len() - 2;
    let frozen_id = format!("s{}", frozen + 1);
    started[frozen].signal("STOP");
    let (after_freeze, freeze_serving) = tokio::join!(
        until_rehomed(&store, &frozen_id, Duration::from_secs(60)),
        until_serving(&http, &started[..frozen], rooms, Duration::from_secs(60)),
    );
    started[frozen].signal("CONT");
    for child in &mut children {
        drop(child.stdin.take());
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut run = Run::new(
        "scale",
        format!("{nodes} nodes, {rooms} rooms, one participant per node ({} connections)", rooms * nodes),
        "ownership writes grow with nodes; failover <= 2 s killed, <= 5 s frozen",
    );
    run.add("connections", joined as f64)
        .add("failed", failed as f64)
        .add("fill_seconds", round2(filled_in.as_secs_f64()))
        .add("join_p50_ms", round2(p50 as f64 / 1000.0))
        .add("join_p99_ms_worst_client", round2(p99 as f64 / 1000.0))
        .add("ownership_writes_per_s", round2(writes));
    for (i, (m, r)) in rss.iter().zip(&hosted).enumerate() {
        run.add(&format!("s{}_rss_mib", i + 1), round2(*m)).add(&format!("s{}_rooms", i + 1), *r);
    }
    for (what, outcome) in [("kill", &after_kill), ("freeze", &after_freeze)] {
        if let Err(e) = outcome {
            eprintln!("{what}: {e:#}");
        }
    }
    let secs = |d: &Result<Duration>| d.as_ref().map_or(-1.0, |d| round2(d.as_secs_f64()));
    run.add("kill_all_owned_again_s", secs(&after_kill))
        .add("kill_all_serving_again_s", secs(&kill_serving))
        .add("freeze_all_owned_again_s", secs(&after_freeze))
        .add("freeze_all_serving_again_s", secs(&freeze_serving));
    Ok(run)
}
