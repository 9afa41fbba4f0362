//! `switchboard bench`: load generators for the figures in `docs/benchmarks.md`. Each starts
//! its own node as a child process (release build recommended) on 127.0.0.1 and a fresh data
//! dir, so the server's memory and CPU are measured apart from the load generator's.
//!
//! - `idle`: server memory per idle joined WebSocket connection.
//! - `relay`: latency of an offer with a 1.5 KB SDP from A to B through the server, at a
//!   fixed aggregate rate, and server CPU per relayed message.

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Nodes of one benchmark share a signing secret, as a cluster's nodes do.
const BENCH_SECRET: &str = "switchboard-bench-secret-0123456789abcdef";

/// A node started for a benchmark; killed on drop.
struct BenchNode {
    child: Child,
    addr: SocketAddr,
    cluster_addr: Option<String>,
    _dir: std::path::PathBuf,
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn start_node(extra: &[String]) -> Result<BenchNode> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{:016x}", rand::random::<u64>()));
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args(extra)
        .env("RUST_LOG", "warn,switchboard=info")
        .env("SWITCHBOARD_AUTH_SECRET", BENCH_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the node")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("ws://").nth(1).and_then(|r| r.split("/ws/signal").next()) {
                let cluster = line
                    .split("cluster_addr=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(|a| a.trim_matches('"').to_owned())
                    .filter(|a| a != "none");
                let _ = tx.send((addr.to_owned(), cluster));
            }
        }
    });
    let (addr, cluster_addr) =
        rx.recv_timeout(Duration::from_secs(30)).context("the node did not report its address")?;
    Ok(BenchNode { child, addr: addr.parse()?, cluster_addr, _dir: dir })
}

fn proc_field(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(key)).ok_or_else(|| anyhow!("no {key}"))?;
    Ok(line.split_whitespace().nth(1).ok_or_else(|| anyhow!("bad {key}"))?.parse()?)
}

/// User + system CPU time of a process, from /proc (clock ticks of 10 ms on Linux).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').ok_or_else(|| anyhow!("bad stat"))?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

async fn token(addr: SocketAddr, user: &str) -> Result<String> {
    let v: Value = reqwest_free_post(addr, &json!({"userId": user}).to_string()).await?;
    v["token"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no token in {v}"))
}

/// A minimal HTTP/1.1 POST to /auth/token over a raw socket (keeps the binary free of an HTTP client).
async fn reqwest_free_post(addr: SocketAddr, body: &str) -> Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "POST /auth/token HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let json = out.split("\r\n\r\n").nth(1).ok_or_else(|| anyhow!("bad HTTP answer"))?;
    Ok(serde_json::from_str(json)?)
}

async fn join(addr: SocketAddr, user: &str, room: &str) -> Result<(Ws, String)> {
    let token = token(addr, user).await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/signal?token={token}")).await?;
    ws.send(Message::text(json!({"type": "join", "roomId": room}).to_string())).await?;
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await?.ok_or_else(|| anyhow!("closed"))??;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t)?;
            if v["type"] == "joined" {
                return Ok((ws, v["peerId"].as_str().unwrap_or_default().to_owned()));
            }
            if v["type"] == "error" {
                bail!("join failed: {v}");
            }
        }
    }
}

/// Server memory per idle joined connection, with `connections` clients in rooms of `room_size`.
pub async fn idle(connections: usize, room_size: usize, no_join: bool, extra: &[String]) -> Result<()> {
    let node = start_node(extra)?;
    let pid = node.child.id();
    // Warm up: one join so lazily built state (pools, metrics) exists before the baseline.
    let warm = join(node.addr, "warmup", "warmup").await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proc_field(pid, "VmRSS:")?;
    let mut clients = Vec::with_capacity(connections);
    let started = Instant::now();
    let mut sockets = Vec::new();
    for i in 0..connections {
        if no_join {
            let token = token(node.addr, &format!("user-{i}")).await?;
            let (ws, _) =
                tokio_tungstenite::connect_async(format!("ws://{}/ws/signal?token={token}", node.addr)).await?;
            sockets.push(ws);
        } else {
            clients.push(join(node.addr, &format!("user-{i}"), &format!("room-{}", i / room_size.max(1))).await?);
        }
    }
    let joined_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proc_field(pid, "VmRSS:")?;
    let per = (after.saturating_sub(before) as f64 * 1024.0) / connections as f64;
    let what = if no_join {
        "connections (not joined)".to_owned()
    } else {
        format!("joined connections in rooms of {room_size}")
    };
    println!("idle: {connections} {what} (opened in {joined_in:.2?})");
    println!("server RSS before {before} KiB, after {after} KiB: {:.1} KiB per connection", per / 1024.0);
    Ok(())
}

/// Relay latency of offers A→B at `rate` messages per second over `pairs` rooms of two. With
/// `cross_node` (needs `--database-url postgres://...` in `extra`), A connects to one node of a
/// two-node cluster and B to the other.
pub async fn relay(pairs: usize, rate: u64, seconds: u64, cross_node: bool, extra: &[String]) -> Result<()> {
    let mut args = extra.to_vec();
    if cross_node {
        args.extend(["--node-id", "b1", "--cluster-addr", "127.0.0.1:0"].map(String::from));
    }
    let node = start_node(&args)?;
    let second = if cross_node {
        let seed = node.cluster_addr.clone().ok_or_else(|| anyhow!("the first node has no cluster address"))?;
        let mut args = extra.to_vec();
        args.extend(["--node-id", "b2", "--cluster-addr", "127.0.0.1:0", "--seeds", &seed].map(String::from));
        Some(start_node(&args)?)
    } else {
        None
    };
    let b_addr = second.as_ref().map_or(node.addr, |n| n.addr);
    let pid = node.child.id();
    let sdp_filler = "a=x-filler:".to_owned() + &"0123456789".repeat(150);
    let mut senders = Vec::new();
    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    for p in 0..pairs {
        let room = format!("relay-{p}");
        let (a, _) = join(node.addr, &format!("a{p}"), &room).await?;
        let (mut b, b_id) = join(b_addr, &format!("b{p}"), &room).await?;
        let lat_tx = lat_tx.clone();
        let t0 = Instant::now();
        // B measures: each offer carries its send time (µs since t0) at the start of the SDP.
        tokio::spawn(async move {
            while let Some(Ok(msg)) = b.next().await {
                if let Message::Text(t) = msg
                    && let Ok(v) = serde_json::from_str::<Value>(&t)
                    && v["type"] == "offer"
                    && let Some(sent) =
                        v["sdp"].as_str().and_then(|s| s.split(';').next()).and_then(|s| s.parse::<u64>().ok())
                {
                    let now = t0.elapsed().as_micros() as u64;
                    let _ = lat_tx.send(Duration::from_micros(now.saturating_sub(sent)));
                }
            }
        });
        senders.push((a, b_id, t0));
    }
    drop(lat_tx);
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let second_pid = second.as_ref().map(|n| n.child.id());
    let cpu_before = cpu_time(pid)? + second_pid.map(cpu_time).transpose()?.unwrap_or_default();
    let started = Instant::now();
    for n in 0..total {
        let due = started + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let i = n as usize % senders.len();
        let (a, b_id, t0) = &mut senders[i];
        let sdp = format!("{};{}", t0.elapsed().as_micros(), sdp_filler);
        a.send(Message::text(json!({"type": "offer", "peerId": b_id, "sdp": sdp}).to_string())).await?;
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(10);
    while latencies.len() < total as usize && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), lat_rx.recv()).await {
            Ok(Some(d)) => latencies.push(d),
            _ => break,
        }
    }
    let cpu = (cpu_time(pid)? + second_pid.map(cpu_time).transpose()?.unwrap_or_default()).saturating_sub(cpu_before);
    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let shape = if cross_node { "A and B on two nodes" } else { "one node" };
    println!(
        "relay ({shape}): {pairs} pairs, {rate} msg/s for {seconds} s, 1.5 KB SDP; delivered {}/{total}",
        latencies.len()
    );
    println!("latency p50 {:?} p99 {:?} max {:?}", pct(0.50), pct(0.99), latencies.last().copied().unwrap_or_default());
    println!(
        "server CPU (all nodes) {:?} = {:.1} µs per relayed message",
        cpu,
        cpu.as_micros() as f64 / total.max(1) as f64
    );
    Ok(())
}
