//! Idle memory: the node's resident memory grown by N joined connections that then say
//! nothing, divided by N. Connections open a few dozen at a time, spread over source
//! addresses (one address has about 28,000 ephemeral ports).

use super::dialer::Dialer;
use super::node::BenchNode;
use super::relay::round2;
use super::report::Run;
use anyhow::Result;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opens `connections` clients in rooms of `room_size` (or not joined) and reads the memory.
pub async fn idle(
    node: &BenchNode,
    connections: usize,
    room_size: usize,
    no_join: bool,
    sources: usize,
) -> Result<Run> {
    let dial = Arc::new(Dialer::new(node.addr, sources));
    // Lazily built state (pools, metrics) exists before the baseline.
    drop(dial.join("warmup", "warmup").await?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = node.rss_kib()?;
    let started = Instant::now();
    let room_size = room_size.max(1);
    let opened: Vec<Result<_>> = futures_util::stream::iter(0..connections)
        .map(|i| {
            let dial = dial.clone();
            async move {
                if no_join {
                    dial.connect(&format!("user-{i}")).await
                } else {
                    Ok(dial.join(&format!("user-{i}"), &format!("room-{}", i / room_size)).await?.conn)
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let opened_in = started.elapsed();
    let failed = opened.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = opened.iter().find(|r| r.is_err()) {
        eprintln!("{failed} connections failed; the first: {e:#}");
    }
    // Let the node settle (frames written, tasks parked) before reading its memory.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = node.rss_kib()?;
    let ok = connections - failed;
    let per_kib = after.saturating_sub(before) as f64 / ok.max(1) as f64;
    let what = if no_join { "not joined".to_owned() } else { format!("joined, rooms of {room_size}") };
    let mut run = Run::new("idle", format!("{connections} connections, {what}"), "<= 10 KB per idle joined connection");
    run.add("connections", ok as f64)
        .add("failed", failed as f64)
        .add("rss_before_kib", before as f64)
        .add("rss_after_kib", after as f64)
        .add("per_connection_kib", round2(per_kib))
        .add("opened_per_s", (ok as f64 / opened_in.as_secs_f64()).round());
    drop(opened);
    Ok(run)
}
