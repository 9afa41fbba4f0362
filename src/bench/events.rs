//! Outbox publish lag: clients join and leave rooms of a node at a fixed rate (each join and
//! leave writes events), a subscriber on the node's broker receives them, and each event's lag
//! is its arrival minus its `timestamp` (when its change committed): the outbox's write, the
//! publisher's poll, the publish and the broker's delivery.

use super::dialer::Dialer;
use super::node::BenchNode;
use super::report::{Latencies, Run};
use crate::bus::{Bus, topics};
use crate::events::Envelope;
use anyhow::{Result, anyhow};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime};

/// `rate` joins (each followed by its leave) per second for `seconds`, events read from `mqtt`.
pub async fn events(node: &BenchNode, mqtt: &str, rate: u64, seconds: u64) -> Result<Run> {
    let bus = Bus::connect(mqtt, "bench-events").map_err(|e| anyhow!("{e}"))?;
    let mut rx = bus.subscribe(&topics::all_events("default"), 65_536);
    if !bus.wait_connected(Duration::from_secs(10)).await {
        return Err(anyhow!("the benchmark's subscriber cannot reach {mqtt}"));
    }
    // Let the subscription settle: probe until one comes back.
    for _ in 0..100 {
        let _ = bus.publish(&topics::event("default", "bench.probe"), b"p".to_vec());
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            break;
        }
    }
    let dial = std::sync::Arc::new(Dialer::new(node.addr, 1));
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = Instant::now() + Duration::from_millis(100);
    let driver = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for n in 0..total {
            tokio::time::sleep_until((t0 + interval.mul_f64(n as f64)).into()).await;
            let dial = dial.clone();
            tasks.push(tokio::spawn(async move {
                let mut joined = dial.join(&format!("e{n}"), &format!("events-{n}")).await?;
                joined.conn.send(&json!({"type": "leave"}).to_string()).await?;
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let mut lag = Latencies::default();
    // Each join and leave of a lone participant: session.created, participant.joined,
    // participant.left, session.closed.
    let expected = total * 4;
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    while (lag.len() as u64) < expected && Instant::now() < deadline {
        let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await else { break };
        let Ok(e) = serde_json::from_slice::<Envelope>(&d.payload) else { continue };
        let Ok(at) = humantime::parse_rfc3339(&e.timestamp) else { continue };
        let now = SystemTime::now();
        lag.push(now.duration_since(at).unwrap_or_default());
    }
    driver.await.map_err(|e| anyhow!("driver: {e}"))?;
    bus.shutdown().await;
    let mut run = Run::new("events", format!("{rate} joins+leaves/s for {seconds} s"), "outbox publish lag p99 <= 1 s");
    run.add("events", lag.len() as f64).add("expected", expected as f64).latency("lag", lag.summary());
    Ok(run)
}
