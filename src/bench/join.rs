//! Join latency: new clients arrive on an open-loop schedule, each opens a WebSocket and
//! joins a room of two; measured from the open socket to `joined` (and the connect on its
//! own). The clients stay until the end, so the node holds all of them by then.

use super::arrivals::open_loop;
use super::dialer::Dialer;
use super::node::BenchNode;
use super::relay::round2;
use super::report::{Latencies, Run};
use anyhow::Result;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Runs `rate` joins per second for `seconds`.
pub async fn joins(node: &BenchNode, rate: u64, seconds: u64, sources: usize, store: &str) -> Result<Run> {
    let dial = Arc::new(Dialer::new(node.addr, sources));
    let kept = Arc::new(Mutex::new(Vec::new()));
    let cpu0 = node.cpu()?;
    let outcomes = open_loop(rate, seconds, "a join", |n, _due| {
        let (dial, kept) = (dial.clone(), kept.clone());
        async move {
            let started = Instant::now();
            let mut conn = dial.connect(&format!("j{n}")).await?;
            let open = Instant::now();
            conn.send(&json!({"type": "join", "roomId": format!("join-{}", n / 2)}).to_string()).await?;
            tokio::time::timeout(Duration::from_secs(10), conn.expect("joined")).await??;
            let joined = Instant::now();
            kept.lock().await.push(conn);
            anyhow::Ok((open - started, joined - open))
        }
    })
    .await?;
    let cpu = node.cpu()? - cpu0;
    let (mut connect, mut join) = (Latencies::default(), Latencies::default());
    for (c, j) in outcomes.done {
        connect.push(c);
        join.push(j);
    }
    let mut run = Run::new(
        "join",
        format!("{rate} joins/s for {seconds} s, rooms of 2, {store}"),
        "join p99 <= 10 ms (PostgreSQL)",
    );
    run.add("joins", join.len() as f64)
        .add("failed", outcomes.failed as f64)
        .latency("join", join.summary())
        .latency("connect", connect.summary())
        .add("server_cpu_pct", round2(100.0 * cpu.as_secs_f64() / outcomes.elapsed.as_secs_f64()));
    Ok(run)
}
