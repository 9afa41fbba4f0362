//! Relay benchmarks: offers with a 1.5 KB SDP from A to B in rooms of two.
//!
//! - [`open_loop`]: a pacing thread sends at a fixed aggregate rate on a schedule decided in
//!   advance; each offer carries its number, and B measures from the moment the schedule
//!   said it should be sent, so a generator that falls behind shows up as latency instead of
//!   hiding it (coordinated omission). The generator's own lateness is reported beside it.
//! - [`closed_loop`]: each pair keeps a window of offers in flight, sending the next as one
//!   arrives: the most the server relays per second.

use super::dialer::Dialer;
use super::node::{BenchNode, own_cpu};
use super::pacer::{Paced, pace};
use super::report::{Latencies, Run};
use super::wire::{self, FrameReader, Incoming};
use anyhow::{Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::tcp::OwnedWriteHalf;

/// What an open-loop relay run does.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// Rooms of two.
    pub pairs: usize,
    /// Aggregate offers per second.
    pub rate: u64,
    /// How long the schedule runs.
    pub seconds: u64,
    /// Offers carry an `id` (acknowledged, kept until acknowledged).
    pub ids: bool,
    /// Offers ask for a delivery receipt (`"receipt":true`, implies `ids`).
    pub receipts: bool,
    /// Source addresses to spread connections over.
    pub sources: usize,
}

/// An SDP-like body of about 1.5 KB with real SDP's `\r\n` line breaks (escaped in JSON, so
/// the server's JSON handling sees what it sees in production).
fn sdp_filler() -> String {
    let mut s = String::with_capacity(1600);
    s.push_str("v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n");
    while s.len() < 1500 {
        s.push_str("a=candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host generation 0\\r\\n");
    }
    s
}

/// A and B of every pair, joined; A's on `a`, B's on `b` (the same node, or two).
struct Pairs {
    a: Vec<wire::Conn>,
    b: Vec<wire::Conn>,
    b_ids: Vec<String>,
}

async fn join_pairs(a: &Dialer, b: &Dialer, pairs: usize, tag: &str) -> Result<Pairs> {
    let mut out = Pairs { a: Vec::new(), b: Vec::new(), b_ids: Vec::new() };
    for p in 0..pairs {
        let room = format!("{tag}-{p}");
        out.a.push(a.join(&format!("a{p}"), &room).await?.conn);
        let jb = b.join(&format!("b{p}"), &room).await?;
        out.b.push(jb.conn);
        out.b_ids.push(jb.peer_id);
    }
    Ok(out)
}

/// Counts what A's side hears back: acknowledgements, receipts and errors.
#[derive(Default)]
struct Answers {
    acks: AtomicU64,
    receipts: AtomicU64,
    errors: AtomicU64,
}

async fn drain_answers(mut reader: FrameReader, answers: Arc<Answers>) {
    while let Ok(Incoming::Text) = reader.next().await {
        let t = reader.text();
        let is = |kind: &[u8]| t.windows(kind.len()).any(|w| w == kind);
        if is(br#""type":"ack""#) {
            answers.acks.fetch_add(1, Ordering::Relaxed);
        } else if is(br#""type":"delivered""#) {
            answers.receipts.fetch_add(1, Ordering::Relaxed);
        } else if is(br#""type":"error""#) && answers.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("first error: {}", String::from_utf8_lossy(t));
        }
    }
}

/// Runs an open-loop relay against `a` (senders) and `b` (receivers; `a` again on one node).
pub async fn open_loop(a: &BenchNode, b: Option<&BenchNode>, opts: &RelayOptions) -> Result<Run> {
    let ids = opts.ids || opts.receipts;
    let dial_a = Dialer::new(a.addr, opts.sources);
    let dial_b = Dialer::new(b.map_or(a.addr, |n| n.addr), opts.sources);
    let pairs = join_pairs(&dial_a, &dial_b, opts.pairs, "relay").await?;
    let total = opts.rate * opts.seconds;
    let interval = Duration::from_secs_f64(1.0 / opts.rate as f64);
    // The schedule starts a little later, once every task below is waiting.
    let t0 = Instant::now() + Duration::from_millis(300);
    let delivered = Arc::new(AtomicU64::new(0));
    let answers = Arc::new(Answers::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut receivers = Vec::new();
    for mut conn in pairs.b {
        let delivered = delivered.clone();
        let mut stopped = stopped.clone();
        receivers.push(tokio::spawn(async move {
            // The whole connection lives in the task: dropping its write half would close it.
            let conn = &mut conn;
            let mut lat = Latencies::default();
            loop {
                tokio::select! {
                    next = conn.reader.next() => if !matches!(next, Ok(Incoming::Text)) { break },
                    _ = stopped.changed() => break,
                }
                let at = Instant::now();
                let Some(n) = wire::number_after(conn.reader.text(), br#""sdp":""#) else { continue };
                lat.push(at.saturating_duration_since(t0 + interval.mul_f64(n as f64)));
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let mut writers = Vec::new();
    let mut keep = Vec::new();
    for conn in pairs.a {
        let (reader, half, paced): (FrameReader, OwnedWriteHalf, std::net::TcpStream) = conn.into_paced()?;
        tokio::spawn(drain_answers(reader, answers.clone()));
        keep.push(half);
        writers.push(paced);
    }
    let b_ids = pairs.b_ids;
    let receipts = opts.receipts;
    let (cpu_a0, cpu_b0, gen0) = (a.cpu()?, b.map(BenchNode::cpu).transpose()?, own_cpu()?);
    // The pacing thread: sleeps to each message's due time (timer slack made precise), sends
    // whatever is due, and records how late it was.
    let filler = sdp_filler();
    let offer = move |n: u64, p: usize| {
        let id = match (ids, receipts) {
            (false, _) => String::new(),
            (true, false) => format!(",\"id\":{n}"),
            (true, true) => format!(",\"id\":{n},\"receipt\":true"),
        };
        format!("{{\"type\":\"offer\",\"peerId\":\"{}\",\"sdp\":\"{n};{filler}\"{id}}}", b_ids[p])
    };
    let Paced { mut late, waits } = pace(t0, interval, total, writers, offer).await?;
    // Wait for the last deliveries (bounded: what has not arrived 5 s after the schedule ended
    // is counted as lost).
    let deadline = Instant::now() + Duration::from_secs(5);
    while delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed();
    let cpu_a = a.cpu()? - cpu_a0;
    let cpu_b = match (b, cpu_b0) {
        (Some(b), Some(c0)) => b.cpu()? - c0,
        _ => Duration::ZERO,
    };
    let gen_cpu = own_cpu()? - gen0;
    drop(keep);
    let _ = stop.send(true);
    let mut lat = Latencies::default();
    for r in receivers {
        lat.merge(r.await?);
    }
    let delivered = delivered.load(Ordering::Relaxed);
    let mut setup = format!("{}/s for {} s, {} pairs", opts.rate, opts.seconds, opts.pairs);
    if b.is_some() {
        setup.push_str(", A and B on two nodes");
    }
    if receipts {
        setup.push_str(", id+receipt");
    } else if ids {
        setup.push_str(", id");
    }
    let target = match (b.is_some(), receipts) {
        (true, _) => "p99 <= 900 us, <= 10 us CPU/msg over both nodes",
        (false, true) => "p99 <= 450 us, <= 8 us CPU/msg",
        (false, false) => "p99 <= 450 us, <= 5 us CPU/msg",
    };
    let mut run = Run::new("relay", setup, target);
    let server_cpu = cpu_a + cpu_b;
    run.add("sent", total as f64)
        .add("delivered", delivered as f64)
        .latency("latency", lat.summary())
        .add("server_cpu_us_per_msg", round2(server_cpu.as_secs_f64() * 1e6 / total.max(1) as f64))
        .add("server_cpu_pct", round2(100.0 * server_cpu.as_secs_f64() / elapsed.as_secs_f64()))
        .add("generator_cpu_pct", round2(100.0 * gen_cpu.as_secs_f64() / elapsed.as_secs_f64()))
        .add("generator_late_p99_us", late.summary().p99_us as f64)
        .add("generator_write_waits", waits as f64);
    if ids {
        run.add("acks", answers.acks.load(Ordering::Relaxed) as f64);
    }
    if receipts {
        run.add("receipts", answers.receipts.load(Ordering::Relaxed) as f64);
    }
    run.add("errors", answers.errors.load(Ordering::Relaxed) as f64);
    if lat.is_empty() {
        run.print();
        bail!("nothing was delivered");
    }
    Ok(run)
}

/// Runs the closed loop: `window` offers in flight per pair for `seconds`.
pub async fn closed_loop(node: &BenchNode, pairs: usize, window: usize, seconds: u64, sources: usize) -> Result<Run> {
    let dial = Dialer::new(node.addr, sources);
    let joined = join_pairs(&dial, &dial, pairs, "max").await?;
    let filler = Arc::new(sdp_filler());
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(seconds);
    let delivered = Arc::new(AtomicU64::new(0));
    let answers = Arc::new(Answers::default());
    let cpu0 = node.cpu()?;
    let mut tasks = Vec::new();
    for ((a, mut b), b_id) in joined.a.into_iter().zip(joined.b).zip(joined.b_ids) {
        let wire::Conn { reader, mut writer } = a;
        tokio::spawn(drain_answers(reader, answers.clone()));
        let (delivered, filler) = (delivered.clone(), filler.clone());
        tasks.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // B's whole connection lives in the task: dropping its write half would close it.
            let b = &mut b;
            let offer = |sent: u64| {
                wire::frame(&format!("{{\"type\":\"offer\",\"peerId\":\"{b_id}\",\"sdp\":\"{sent};{filler}\"}}"))
            };
            let mut lat = Latencies::default();
            for _ in 0..window {
                writer.write_all(&offer(t0.elapsed().as_micros() as u64)).await?;
            }
            while Instant::now() < end {
                match tokio::time::timeout(Duration::from_secs(5), b.reader.next()).await {
                    Ok(Ok(Incoming::Text)) => {}
                    _ => break,
                }
                let Some(sent) = wire::number_after(b.reader.text(), br#""sdp":""#) else { continue };
                lat.push(t0.elapsed().saturating_sub(Duration::from_micros(sent)));
                delivered.fetch_add(1, Ordering::Relaxed);
                writer.write_all(&offer(t0.elapsed().as_micros() as u64)).await?;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Latencies::default();
    for t in tasks {
        lat.merge(t.await??);
    }
    let elapsed = t0.elapsed();
    let cpu = node.cpu()? - cpu0;
    let n = delivered.load(Ordering::Relaxed);
    let mut run = Run::new(
        "throughput",
        format!("closed loop, {pairs} pairs x {window} in flight, {seconds} s"),
        ">= 100,000 deliveries/s per node",
    );
    run.add("deliveries_per_s", (n as f64 / elapsed.as_secs_f64()).round())
        .latency("latency", lat.summary())
        .add("server_cpu_us_per_msg", round2(cpu.as_secs_f64() * 1e6 / n.max(1) as f64))
        .add("errors", answers.errors.load(Ordering::Relaxed) as f64);
    Ok(run)
}

/// Rounds to two decimals.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
