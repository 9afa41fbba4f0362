//! Idle rooms beside the streaming ones, for runs at size: one `switchboard bench
//! scale-clients` process per node joins every idle room through that node (so each idle room
//! has a participant on every node) and keeps its connections open, reading, until the run
//! ends. The rooms say nothing; they are there so that a killed or frozen node has thousands of
//! rooms for the survivors to take over while the streaming rooms are checked. Their rooms are
//! named `idle-<seed>-<n>` and left out of the owner and database checks.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Room ids of idle rooms start with this.
pub const PREFIX: &str = "idle-";

/// The running client processes.
pub struct IdleClients {
    children: Vec<Child>,
}

impl IdleClients {
    /// Joins `rooms` idle rooms through every node of `nodes` (ids and HTTP addresses) and
    /// returns once all are in; fails if any join failed.
    pub async fn start(binary: &Path, nodes: &[(String, SocketAddr)], rooms: usize, seed: u64) -> Result<IdleClients> {
        let mut children = Vec::new();
        let mut lines = Vec::new();
        for (id, addr) in nodes {
            let mut child = Command::new(binary)
                .args(["bench", "scale-clients", "--server", &addr.to_string(), "--rooms", &rooms.to_string()])
                .args(["--tag", &format!("idle-{id}"), "--room-prefix", &format!("{PREFIX}{seed}-")])
                .env("SWITCHBOARD_BENCH_SECRET", crate::nodes::SECRET)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting the idle clients")?;
            let stdout = child.stdout.take().context("no stdout")?;
            lines.push(tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }));
            children.push(child);
        }
        let clients = IdleClients { children };
        for line in lines {
            let line = line.await??;
            let v: serde_json::Value =
                serde_json::from_str(&line).with_context(|| format!("idle clients: {line:?}"))?;
            let failed = v["failed"].as_u64().unwrap_or(u64::MAX);
            if failed > 0 {
                bail!("{failed} idle joins failed: {line}");
            }
        }
        Ok(clients)
    }

    /// Client processes running (one per node).
    pub fn processes(&self) -> usize {
        self.children.len()
    }
}

impl Drop for IdleClients {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
