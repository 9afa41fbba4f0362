//! Fan-out: one room of many, everyone receiving every chat message. Chat is sent on an
//! open-loop schedule from the members in turn; each member measures from the scheduled
//! send time and counts its deliveries.

use super::dialer::Dialer;
use super::node::{BenchNode, own_cpu};
use super::pacer::pace;
use super::relay::round2;
use super::report::{Latencies, Run};
use super::wire::{self, Incoming};
use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Runs `rate` chat messages per second for `seconds` in a room of `size`.
pub async fn fanout(node: &BenchNode, size: usize, rate: u64, seconds: u64, sources: usize) -> Result<Run> {
    let dial = Dialer::new(node.addr, sources);
    let mut members = Vec::new();
    for i in 0..size {
        members.push(dial.join(&format!("m{i}"), "fanout").await?.conn);
    }
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = Instant::now() + Duration::from_millis(300);
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut receivers = Vec::new();
    let mut writers = Vec::new();
    let mut keep = Vec::new();
    for conn in members {
        let (mut reader, half, paced) = conn.into_paced()?;
        keep.push(half);
        writers.push(paced);
        let (delivered, mut stopped) = (delivered.clone(), stopped.clone());
        receivers.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            loop {
                tokio::select! {
                    next = reader.next() => if !matches!(next, Ok(Incoming::Text)) { break },
                    _ = stopped.changed() => break,
                }
                let at = Instant::now();
                let Some(n) = wire::number_after(reader.text(), br#""text":"chat "#) else { continue };
                lat.push(at.saturating_duration_since(t0 + interval.mul_f64(n as f64)));
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let (cpu0, gen0) = (node.cpu()?, own_cpu()?);
    let chat = |n: u64, _: usize| format!("{{\"type\":\"chat\",\"text\":\"chat {n} hello everyone\"}}");
    pace(t0, interval, total, writers, chat).await?;
    let expected = total * size as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed();
    let (cpu, gen_cpu) = (node.cpu()? - cpu0, own_cpu()? - gen0);
    let _ = stop.send(true);
    let mut lat = Latencies::default();
    for r in receivers {
        lat.merge(r.await?);
    }
    drop(keep);
    let n = delivered.load(Ordering::Relaxed);
    let mut run = Run::new(
        "fanout",
        format!("chat in a room of {size}, {rate} messages/s for {seconds} s"),
        ">= 100,000 deliveries/s per node",
    );
    run.add("expected_deliveries", expected as f64)
        .add("deliveries", n as f64)
        .add("deliveries_per_s", (n as f64 / elapsed.as_secs_f64()).round())
        .latency("latency", lat.summary())
        .add("server_cpu_us_per_delivery", round2(cpu.as_secs_f64() * 1e6 / n.max(1) as f64))
        .add("generator_cpu_pct", round2(100.0 * gen_cpu.as_secs_f64() / elapsed.as_secs_f64()));
    Ok(run)
}
