//! Join latency: new clients arrive on an open-loop schedule, each opens a WebSocket and
//! joins a room of two; measured from the open socket to `joined` (and the connect on its
//! own). The clients stay until the end, so the node holds all of them by then.

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
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = Instant::now() + Duration::from_millis(200);
    let kept = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let cpu0 = node.cpu()?;
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = t0 + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (dial, kept) = (dial.clone(), kept.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut conn = dial.connect(&format!("j{n}")).await?;
            let open = Instant::now();
            conn.send(&json!({"type": "join", "roomId": format!("join-{}", n / 2)}).to_string()).await?;
            tokio::time::timeout(Duration::from_secs(10), conn.expect("joined")).await??;
            let joined = Instant::now();
            kept.lock().await.push(conn);
            anyhow::Ok((open - started, joined - open))
        }));
    }
    let (mut connect, mut join, mut failed) = (Latencies::default(), Latencies::default(), 0u64);
    for t in tasks {
        match t.await? {
            Ok((c, j)) => {
                connect.push(c);
                join.push(j);
            }
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("a join failed: {e:#}");
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    let cpu = node.cpu()? - cpu0;
    let mut run = Run::new(
        "join",
        format!("{rate} joins/s for {seconds} s, rooms of 2, {store}"),
        "join p99 <= 10 ms (PostgreSQL)",
    );
    run.add("joins", join.len() as f64)
        .add("failed", failed as f64)
        .latency("join", join.summary())
        .latency("connect", connect.summary())
        .add("server_cpu_pct", round2(100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()));
    Ok(run)
}
