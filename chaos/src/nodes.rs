//! The cluster under test: `switchboard serve` processes on 127.0.0.1 against one PostgreSQL
//! database, started, killed, frozen, drained and restarted by the harness. Every process's
//! output is kept (all incarnations of a node), to look for panics at the end.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The secret every node and the harness share (tokens come from the nodes' dev endpoint).
pub const SECRET: &str = "chaos-secret-chaos-secret-chaos-secret-01";

/// Where each node can be reached now; clients pick from here when they reconnect.
#[derive(Default)]
pub struct Directory {
    nodes: RwLock<Vec<(String, Option<SocketAddr>)>>,
}

impl Directory {
    /// HTTP addresses of the nodes that are running and not frozen.
    pub fn live(&self) -> Vec<(String, SocketAddr)> {
        let nodes = self.nodes.read().expect("directory");
        nodes.iter().filter_map(|(id, a)| a.map(|a| (id.clone(), a))).collect()
    }

    fn set(&self, id: &str, addr: Option<SocketAddr>) {
        let mut nodes = self.nodes.write().expect("directory");
        match nodes.iter_mut().find(|(n, _)| n == id) {
            Some(slot) => slot.1 = addr,
            None => nodes.push((id.to_owned(), addr)),
        }
    }
}

/// One node: its current process (if any) and everything its processes printed.
pub struct Node {
    pub id: String,
    child: Option<Child>,
    pub http: Option<SocketAddr>,
    pub cluster: Option<SocketAddr>,
    pub frozen: bool,
    log: Arc<Mutex<String>>,
    data_dir: PathBuf,
}

/// How to start nodes.
pub struct Launch {
    pub binary: PathBuf,
    pub database_url: String,
    pub config: PathBuf,
    pub work_dir: PathBuf,
}

/// The cluster.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub directory: Arc<Directory>,
    launch: Launch,
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts `n` nodes (n1 first, the others with it as their seed) and waits until every
    /// node sees every other one up.
    pub async fn start(launch: Launch, n: usize) -> Result<Cluster> {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            directory: Arc::new(Directory::default()),
            launch,
            http: reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?,
        };
        // The links between the nodes are mutual TLS, as outside dev mode: a cluster CA and a
        // certificate per node, made once for the run.
        let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let made = Command::new(&cluster.launch.binary)
            .args(["cluster-certs", "--nodes", &ids.join(","), "--force", "--out"])
            .arg(cluster.launch.work_dir.join("cluster-tls"))
            .output()
            .context("making the cluster's certificates")?;
        if !made.status.success() {
            bail!("cluster-certs failed: {}", String::from_utf8_lossy(&made.stderr));
        }
        for i in 1..=n {
            let id = format!("n{i}");
            let data_dir = cluster.launch.work_dir.join(&id);
            std::fs::create_dir_all(&data_dir)?;
            cluster.nodes.push(Node {
                id,
                child: None,
                http: None,
                cluster: None,
                frozen: false,
                log: Arc::default(),
                data_dir,
            });
            cluster.spawn(i - 1)?;
        }
        cluster.until_formed(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Starts node `i`'s process, seeded with every other running node.
    fn spawn(&mut self, i: usize) -> Result<()> {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, n)| *j != i && n.child.is_some() && !n.frozen)
            .filter_map(|(_, n)| n.cluster.map(|a| a.to_string()))
            .collect();
        let node = &mut self.nodes[i];
        let mut cmd = Command::new(&self.launch.binary);
        cmd.arg("serve")
            .args(["--http-addr", "127.0.0.1:0", "--cluster-addr", "127.0.0.1:0", "--node-id", &node.id])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--database-url")
            .arg(&self.launch.database_url)
            .arg("--config")
            .arg(&self.launch.config)
            .env("SWITCHBOARD_AUTH_SECRET", SECRET)
            .env("RUST_LOG", std::env::var("CHAOS_NODE_LOG").unwrap_or_else(|_| "info".into()))
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !seeds.is_empty() {
            cmd.args(["--seeds", &seeds.join(",")]);
        }
        let certs = self.launch.work_dir.join("cluster-tls");
        cmd.arg("--cluster-tls-cert")
            .arg(certs.join(format!("{}.pem", node.id)))
            .arg("--cluster-tls-key")
            .arg(certs.join(format!("{}-key.pem", node.id)))
            .arg("--cluster-ca")
            .arg(certs.join("ca.pem"));
        let mut child = cmd.spawn().with_context(|| format!("start {}", self.launch.binary.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let pipes: [Box<dyn std::io::Read + Send>; 2] =
            [Box::new(child.stdout.take().context("stdout")?), Box::new(child.stderr.take().context("stderr")?)];
        for pipe in pipes {
            let (log, tx) = (node.log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(addrs) = listening(&line) {
                        let _ = tx.send(addrs);
                    }
                    log.lock().expect("log").push_str(&(line + "\n"));
                }
            });
        }
        // A restarted node first waits out the claim of its dead predecessor.
        let (http, cluster) = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow!("{} did not report its addresses:\n{}", node.id, tail(&node.log)))?;
        node.child = Some(child);
        node.http = Some(http);
        node.cluster = Some(cluster);
        node.frozen = false;
        self.directory.set(&node.id, Some(http));
        Ok(())
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.http = None;
        node.frozen = false;
        self.directory.set(&node.id, None);
    }

    /// SIGSTOP: the process keeps its sockets but does nothing.
    pub fn freeze(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(child) = &node.child {
            signal(child.id(), "-STOP");
            node.frozen = true;
            self.directory.set(&node.id, None);
        }
    }

    /// SIGCONT.
    pub fn thaw(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(child) = &node.child {
            signal(child.id(), "-CONT");
            node.frozen = false;
            self.directory.set(&node.id, node.http);
        }
    }

    /// SIGTERM (the node drains: goaway, hand-off), then waits for it to exit.
    pub async fn drain(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        // Clients stop picking it at once; it tells its own clients to go.
        self.directory.set(&node.id, None);
        let Some(mut child) = node.child.take() else { return Ok(()) };
        signal(child.id(), "-TERM");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                node.http = None;
                if !status.success() {
                    bail!("{} exited with {status} after SIGTERM:\n{}", node.id, tail(&node.log));
                }
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("{} did not exit within 30 s of SIGTERM", node.id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts node `i` again (same id, new ports) and waits until every node sees it up.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.log_line(i, "--- restarted by the chaos harness ---");
        self.spawn(i)?;
        self.until_formed(Duration::from_secs(30)).await
    }

    fn log_line(&self, i: usize, line: &str) {
        self.nodes[i].log.lock().expect("log").push_str(&format!("{line}\n"));
    }

    /// The running node that holds the most room leases (from the cluster's room map).
    pub async fn busiest(&self) -> Option<usize> {
        let http = self.running().into_iter().find_map(|i| self.nodes[i].http)?;
        let map = self.get(http, "/api/cluster?limit=1000").await.ok()?;
        let mut counts = vec![0usize; self.nodes.len()];
        for room in map["rooms"].as_array().into_iter().flatten() {
            if let Some(i) = self.nodes.iter().position(|n| room["nodeId"] == n.id.as_str()) {
                counts[i] += 1;
            }
        }
        self.running().into_iter().max_by_key(|&i| counts[i])
    }

    /// Indexes of nodes that are running and not frozen.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].child.is_some() && !self.nodes[i].frozen).collect()
    }

    /// Waits until every running node sees exactly the running nodes as `up`.
    pub async fn until_formed(&self, within: Duration) -> Result<()> {
        let started = Instant::now();
        let want: Vec<String> = self.running().iter().map(|&i| self.nodes[i].id.clone()).collect();
        loop {
            let mut agreed = true;
            for &i in &self.running() {
                let Some(http) = self.nodes[i].http else { continue };
                let up = match self.get(http, "/api/cluster").await {
                    Ok(v) => up_members(&v),
                    Err(_) => Vec::new(),
                };
                if up != want {
                    agreed = false;
                    break;
                }
            }
            if agreed {
                return Ok(());
            }
            if started.elapsed() > within {
                bail!("the cluster did not agree on {want:?} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET `path` on a node; its JSON.
    pub async fn get(&self, http: SocketAddr, path: &str) -> Result<Value> {
        Ok(self.http.get(format!("http://{http}{path}")).send().await?.error_for_status()?.json().await?)
    }

    /// Every node's output, all incarnations.
    pub fn logs(&self) -> Vec<(String, String)> {
        self.nodes.iter().map(|n| (n.id.clone(), n.log.lock().expect("log").clone())).collect()
    }

    /// Writes every node's output under `dir`.
    pub fn save_logs(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for (id, log) in self.logs() {
            std::fs::write(dir.join(format!("{id}.log")), log)?;
        }
        Ok(())
    }

    /// Stops everything (thaws first so that nothing stays stopped).
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.thaw(i);
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

/// The HTTP and cluster addresses from a node's "listening" line.
fn listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let http = line.split("ws://").nth(1)?.split("/ws/signal").next()?.parse().ok()?;
    let cluster = line.split("cluster_addr=").nth(1)?.split_whitespace().next()?.trim_matches('"').parse().ok()?;
    Some((http, cluster))
}

fn up_members(v: &Value) -> Vec<String> {
    let mut up: Vec<String> = v["members"]
        .as_array()
        .map(|m| {
            m.iter().filter(|m| m["state"] == "up").filter_map(|m| m["nodeId"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default();
    up.sort();
    up
}

fn tail(log: &Mutex<String>) -> String {
    let log = log.lock().expect("log");
    let start = log.len().saturating_sub(4000);
    log.get(start..).unwrap_or_default().to_owned()
}
