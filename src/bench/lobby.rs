//! Lobby pairing: people arrive on an open-loop schedule and wait in one lobby; every second
//! one finds the one before waiting and is paired at once. Measured from a newcomer's
//! `lobby_join` to its `paired` (the partner was waiting: the case the target speaks of).

use super::arrivals::open_loop;
use super::dialer::Dialer;
use super::node::BenchNode;
use super::relay::round2;
use super::report::{Latencies, Run};
use anyhow::Result;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Runs `rate` arrivals per second for `seconds`.
pub async fn pairing(node: &BenchNode, rate: u64, seconds: u64, sources: usize, store: &str) -> Result<Run> {
    let dial = Arc::new(Dialer::new(node.addr, sources));
    let kept = Arc::new(Mutex::new(Vec::new()));
    let cpu0 = node.cpu()?;
    let outcomes = open_loop(rate, seconds, "a lobby_join", |n, due| {
        let (dial, kept) = (dial.clone(), kept.clone());
        async move {
            let mut conn = dial.connect(&format!("l{n}")).await?;
            // Timed from the intended arrival, so a late generator shows in the figure.
            conn.send(&json!({"type": "lobby_join", "lobby": "bench"}).to_string()).await?;
            let first =
                tokio::time::timeout(Duration::from_secs(10), conn.expect_any(&["paired", "lobby_waiting"])).await??;
            let paired = (first["type"] == "paired").then(|| due.elapsed());
            kept.lock().await.push(conn);
            anyhow::Ok(paired)
        }
    })
    .await?;
    let cpu = node.cpu()? - cpu0;
    let mut pairing = Latencies::default();
    let mut waited = 0u64;
    for outcome in outcomes.done {
        match outcome {
            Some(latency) => pairing.push(latency),
            None => waited += 1,
        }
    }
    let mut run = Run::new(
        "lobby",
        format!("{rate} arrivals/s for {seconds} s, one lobby, {store}"),
        "pairing p95 <= 1 s when a partner is waiting",
    );
    run.add("paired", pairing.len() as f64)
        .add("waited", waited as f64)
        .add("failed", outcomes.failed as f64)
        .latency("pairing", pairing.summary())
        .add("server_cpu_pct", round2(100.0 * cpu.as_secs_f64() / outcomes.elapsed.as_secs_f64()));
    Ok(run)
}
