//! Test support: in-process servers, WebSocket clients, tokens, fresh PostgreSQL databases.

use serde_json::{Value, json};
use std::time::Duration;
use switchboard::config::Config;
use switchboard::server::{RunningServer, start};
use switchboard_client::{DefaultStream, RawConnection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// How long a test waits for any one event.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fixed secret so tests can sign their own (bad) tokens.
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// A server running in this process, with its data directory.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub addr: std::net::SocketAddr,
    /// Kept so the data directory lives as long as the server.
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// A config for tests: loopback, port 0, a temp data dir, a known secret, and no embedded
/// TURN server (its default port would be shared by every test; `turn.rs` turns it on, on
/// port 0, where it is under test).
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.http.addr = "127.0.0.1:0".parse().expect("addr");
    c.data_dir = dir.to_path_buf();
    c.auth.secret = Some(SECRET.into());
    c.turn.enabled = Some(false);
    c
}

impl TestServer {
    /// A server on SQLite in a fresh temp dir.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose config `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    /// A server with a given config and dir.
    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = start(config, listener).await.expect("server starts");
        let addr = server.addr;
        TestServer { server: Some(server), addr, dir, http: reqwest::Client::new() }
    }

    pub fn app(&self) -> &std::sync::Arc<switchboard::app::App> {
        &self.server.as_ref().expect("running").app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A token from `POST /auth/token`.
    pub async fn token(&self, body: Value) -> String {
        let resp = self.http.post(self.url("/auth/token")).json(&body).send().await.expect("post token");
        assert_eq!(resp.status(), 200, "token request {body}");
        let v: Value = resp.json().await.expect("json");
        v["token"].as_str().expect("token").to_owned()
    }

    /// A client connected with a fresh token for `user`.
    pub async fn client(&self, user: &str) -> Client {
        let token = self.token(json!({"userId": user})).await;
        Client::connect(self.addr, &token).await
    }

    /// A client that has joined `room`; returns it with its `joined` message.
    pub async fn joined(&self, user: &str, room: &str) -> (Client, Value) {
        let mut c = self.client(user).await;
        c.send(json!({"type": "join", "roomId": room})).await;
        let joined = c.recv_type("joined").await;
        c.peer_id = joined["peerId"].as_str().expect("peerId").to_owned();
        (c, joined)
    }

    /// Graceful shutdown.
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A WebSocket client speaking protocol v1 (over plain TCP unless given another stream, such
/// as a TLS one): the client crate's raw connection, which sends whatever a test asks (bad
/// JSON, binary frames, floods), with the test's own strict check of the `seq` numbering.
pub struct Client<S = DefaultStream> {
    pub ws: RawConnection<S>,
    pub peer_id: String,
    pub last_seq: u64,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr, token: &str) -> Client {
        let url = format!("ws://{addr}/ws/signal");
        let ws = tokio::time::timeout(WAIT, RawConnection::connect(&url, Some(token)))
            .await
            .expect("connect in time")
            .expect("connect");
        Client { ws, peer_id: String::new(), last_seq: 0 }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client on a WebSocket opened by other means.
    pub fn over(ws: WebSocketStream<S>) -> Client<S> {
        Client { ws: RawConnection::over(ws), peer_id: String::new(), last_seq: 0 }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send_value(&v).await.expect("send");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send_text(text).await.expect("send");
    }

    /// The next text frame, checking that `seq` rises by one each time.
    pub async fn recv(&mut self) -> Value {
        let v = match tokio::time::timeout(WAIT, self.ws.recv_value()).await.expect("a message in time") {
            Ok(v) => v,
            Err(switchboard_client::Error::Closed { code, reason }) => panic!("connection closed: {code:?} {reason}"),
            Err(e) => panic!("no frame: {e}"),
        };
        let seq = v["seq"].as_u64().expect("every server message has a seq");
        // A `goaway` repeats the last number (it is not part of the room's sequence).
        let expected = if v["type"] == "goaway" { self.last_seq } else { self.last_seq + 1 };
        assert_eq!(seq, expected, "seq must rise by one: {v}");
        self.last_seq = seq;
        v
    }

    /// The next message of type `t`, skipping at most 200 others (status and quality reports...).
    pub async fn recv_type(&mut self, t: &str) -> Value {
        for _ in 0..200 {
            let v = self.recv().await;
            if v["type"] == t {
                return v;
            }
            if v["type"] == "error" && t != "error" {
                panic!("expected {t}, got error {v}");
            }
        }
        panic!("no {t} message among the next 200");
    }

    /// Waits for the server to close the connection; returns the close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        tokio::time::timeout(WAIT, self.ws.close_frame()).await.expect("close in time")
    }
}

/// A fresh PostgreSQL database for one test, or `None` (with a loud note) when
/// `SWITCHBOARD_TEST_DATABASE_URL` is not set.
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("SWITCHBOARD_TEST_DATABASE_URL") else {
        // Written to the real stderr, past the test harness's capture, so a skip is never silent.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED ({test}): needs PostgreSQL; set SWITCHBOARD_TEST_DATABASE_URL");
        return None;
    };
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&base).await.expect("connect to SWITCHBOARD_TEST_DATABASE_URL");
    let name = format!("sb_test_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
    let _ = conn.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("URL has a database path");
    Some(format!("{prefix}/{name}"))
}

/// A `switchboard serve` process (a real node, for crash and restart tests).
pub struct Node {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub cluster_addr: Option<std::net::SocketAddr>,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Node {
    /// Starts the binary with `args` after `serve`, on port 0; waits for its address.
    pub fn spawn(data_dir: &std::path::Path, extra: &[&str]) -> Node {
        Self::spawn_with_env(data_dir, extra, &[])
    }

    /// Like `spawn`, with extra environment variables (they override the defaults).
    pub fn spawn_with_env(data_dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("SWITCHBOARD_AUTH_SECRET", SECRET)
            .env("RUST_LOG", "info")
            // A single node runs its TURN server by default: on port 0, so that nodes of
            // parallel tests do not share 3478.
            .env("SWITCHBOARD_TURN_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn switchboard");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("ws://").nth(1).or_else(|| line.split("wss://").nth(1))
                        && let Some(addr) = rest.split("/ws/signal").next()
                    {
                        let cluster = line
                            .split("cluster_addr=")
                            .nth(1)
                            .and_then(|r| r.split_whitespace().next())
                            .map(|a| a.trim_matches('"').to_owned());
                        let _ = tx.send((addr.to_owned(), cluster));
                    }
                    log.lock().expect("log").push_str(&(line + "\n"));
                }
            });
        }
        let (addr, cluster) = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("node did not report its address:\n{}", log.lock().expect("log")));
        let cluster_addr = cluster.and_then(|c| c.parse().ok());
        Node { child, addr: addr.parse().expect("address"), cluster_addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends the process a signal by name (`HUP`, `TERM`...).
    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{name}");
    }

    /// Waits (bounded) until the log holds `needle` more than `seen` times; returns the count.
    pub async fn await_log(&self, needle: &str, seen: usize) -> usize {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let count = self.log().matches(needle).count();
            if count > seen {
                return count;
            }
            assert!(std::time::Instant::now() < deadline, "no new {needle:?} in the log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGSTOP (true) or SIGCONT (false).
    pub fn freeze(&self, stop: bool) {
        let signal = if stop { "-STOP" } else { "-CONT" };
        let _ = std::process::Command::new("kill").arg(signal).arg(self.child.id().to_string()).status();
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..1000 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("node did not exit within 10 s of SIGTERM");
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token from a node.
pub async fn node_token(addr: std::net::SocketAddr, user: &str) -> String {
    let v: Value = reqwest::Client::new()
        .post(format!("http://{addr}/auth/token"))
        .json(&json!({"userId": user}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    v["token"].as_str().expect("token").to_owned()
}

/// GET `url` without credentials; the JSON body.
pub async fn get_json(url: &str) -> Value {
    reqwest::Client::new().get(url).send().await.expect("get").json().await.expect("json")
}

/// GET `url` with a bearer token; the JSON body.
pub async fn get_json_as(url: &str, token: &str) -> Value {
    reqwest::Client::new().get(url).bearer_auth(token).send().await.expect("get").json().await.expect("json")
}

/// The outbox of a call both of whose participants were still in it when the node died,
/// after the next start reconciled it.
pub const RECONCILED_CALL_EVENTS: [&str; 6] = [
    "session.created",
    "participant.joined",
    "participant.joined",
    "participant.left",
    "participant.left",
    "session.closed",
];

/// A local S3-compatible server (`moto_server` from PyPI), in memory, on a free loopback port.
pub struct Moto {
    child: std::process::Child,
    pub url: String,
}

impl Moto {
    pub async fn start() -> Option<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(moto);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        None
    }

    /// Creates `bucket`.
    pub async fn bucket(&self, bucket: &str) {
        let created = reqwest::Client::new().put(format!("{}/{bucket}", self.url)).send().await.expect("create bucket");
        assert!(created.status().is_success(), "{}", created.status());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `switchboard verify-report` with `args`: whether it passed, and what it printed.
pub async fn verify_report(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("verify-report")
        .args(args)
        .output()
        .await
        .expect("run verify-report");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
