//! The server under test: a `switchboard serve` child process on 127.0.0.1 with a fresh data
//! directory and limits opened up for load (the per-connection rate limit would otherwise
//! refuse the generator), and the CPU and memory readings of it and of the generator.

use anyhow::{Context, Result, anyhow};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Nodes of one benchmark share a signing secret, as a cluster's nodes do, and the generator
/// mints its tokens with it.
pub const BENCH_SECRET: &str = "switchboard-bench-secret-0123456789abcdef";

/// The configuration every benchmark node runs with, on top of the defaults.
const BENCH_CONFIG: &str = "\
[limits]
messages_per_second = 1000000.0
burst = 1000000.0

[rooms]
max_participants = 64

# Benchmarks measure signaling; nodes started side by side would also fight over TURN's port.
[turn]
enabled = false
";

/// A node started for a benchmark; killed on drop.
pub struct BenchNode {
    child: Child,
    /// Its HTTP and WebSocket address.
    pub addr: SocketAddr,
    /// Its cluster address, when it is a cluster member.
    pub cluster_addr: Option<String>,
    dir: std::path::PathBuf,
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl BenchNode {
    /// Starts a node with `extra` serve flags (e.g. `--database-url postgres://...`).
    pub fn start(extra: &[String]) -> Result<BenchNode> {
        let dir = std::env::temp_dir().join(format!("switchboard-bench-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("bench.toml");
        std::fs::write(&config, BENCH_CONFIG)?;
        // `SWITCHBOARD_BENCH_WRAP="heaptrack -o /tmp/idle"` (say) runs the node under a profiler.
        let wrap = std::env::var("SWITCHBOARD_BENCH_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut command = match wrap.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(wrap).arg(std::env::current_exe()?);
                c
            }
            None => Command::new(std::env::current_exe()?),
        };
        let mut child = command
            .args(["serve", "--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .arg("--config")
            .arg(&config)
            .args(extra)
            .env("RUST_LOG", "warn,switchboard=info")
            .env("SWITCHBOARD_AUTH_SECRET", BENCH_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the node")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        // The node prints where it listens in its first log line; the rest is drained so the
        // pipe never fills.
        // With `SWITCHBOARD_BENCH_LOG=<dir>`, each node's log is also kept in `<dir>/node-<pid>.log`.
        let mut log = std::env::var_os("SWITCHBOARD_BENCH_LOG").and_then(|d| {
            std::fs::File::create(std::path::Path::new(&d).join(format!("node-{}.log", child.id()))).ok()
        });
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(file) = log.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
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
        Ok(BenchNode { child, addr: addr.parse()?, cluster_addr, dir })
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the node a signal (`KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
    }

    /// CPU time the node has used so far.
    pub fn cpu(&self) -> Result<Duration> {
        cpu_time(&self.pid().to_string())
    }

    /// The node's resident memory, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow!("no VmRSS"))?;
        Ok(line.split_whitespace().nth(1).ok_or_else(|| anyhow!("bad VmRSS"))?.parse()?)
    }
}

/// CPU time the generator (this process) has used so far.
pub fn own_cpu() -> Result<Duration> {
    cpu_time("self")
}

/// User + system CPU time of a process, from /proc (clock ticks of 10 ms on Linux).
fn cpu_time(pid: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').ok_or_else(|| anyhow!("bad stat"))?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| fields.get(i).ok_or_else(|| anyhow!("short stat")).and_then(|f| Ok(f.parse::<u64>()?));
    Ok(Duration::from_millis((field(11)? + field(12)?) * 10))
}

/// Raises this process's open-file limit (children inherit it) so that both ends of tens of
/// thousands of connections fit. Raising the hard limit needs privileges; without them the
/// soft limit goes as high as the hard one allows.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    if rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted).is_ok() {
        return wanted;
    }
    rlimit::increase_nofile_limit(wanted).unwrap_or(0)
}

/// Makes the calling thread's sleeps precise to a microsecond instead of the default 50 µs
/// timer slack (per-thread, through /proc; ignored where not permitted).
pub fn precise_sleeps() {
    let _ = std::fs::write("/proc/thread-self/timerslack_ns", "1000");
}
