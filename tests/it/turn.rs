//! TURN: the server embedded in the node, and Debian's coturn with Switchboard's credentials.
//!
//! - Two real WebRTC peers restricted to relay candidates call each other through the embedded
//!   server, with the `iceServers` their `joined` gave them, and select a relay pair.
//! - A TURN client (the `turn` crate's, over UDP and over TCP) allocates and relays with a
//!   valid credential; an expired one, a wrong password and a malformed username are refused
//!   at allocation, and a peer outside the relay policy at permission.
//! - When coturn is installed, its test client (`turnutils_uclient`) relays through the
//!   embedded server over UDP and TCP, and is refused with an expired credential.
//! - When `/usr/bin/turnserver` is installed, coturn (`use-auth-secret` with the node's
//!   `ice.turn_secret`) relays a relay-only call set up with the credentials Switchboard
//!   issued, and refuses an expired one. Without it, the test says loudly that it skipped.

use crate::support::{Node, TestServer, WAIT, get_json_as, node_token};
use crate::webrtc_peers::{PeerOptions, connect_with, exchange};
use ::turn::client::{Client as TurnClient, ClientConfig};
use anyhow::{Context, Result, anyhow, ensure};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use switchboard::ice::turn_password;
use switchboard::turn::tcp::{read_frame, stream_frame};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use webrtc::peer_connection::RTCIceCandidateType;
use webrtc_util::Conn;

const TURN_SECRET: &str = "turn-test-secret-turn-test-secret";

/// A node with its embedded TURN server on a free loopback port.
async fn node_with_turn(tweak: impl FnOnce(&mut switchboard::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.turn.enabled = Some(true);
        c.turn.listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.ice.turn_secret = Some(TURN_SECRET.into());
        tweak(c);
    })
    .await
}

fn turn_addr(s: &TestServer) -> SocketAddr {
    s.server.as_ref().expect("running").turn_addr().expect("the embedded TURN server runs")
}

/// The value of an unlabelled metric, or of the first series whose labels contain `labels`.
async fn metric(s: &TestServer, name: &str, labels: &str) -> f64 {
    let text = s.http.get(s.url("/metrics")).send().await.expect("get").text().await.expect("text");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Asserts that both peers of a call selected a relay-relay candidate pair.
async fn assert_relayed(call: &crate::webrtc_peers::Call) -> Result<()> {
    for (side, (local, remote)) in ["alice", "bob"].into_iter().zip(call.selected_pairs().await?) {
        ensure!(
            local == RTCIceCandidateType::Relay && remote == RTCIceCandidateType::Relay,
            "{side} selected a {local:?}/{remote:?} pair, not relay/relay"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_call_connects_through_the_embedded_turn_server() -> Result<()> {
    let mut s = node_with_turn(|_| {}).await;
    let port = turn_addr(&s).port();
    let (alice, joined_a) = s.joined("alice", "turn-room").await;
    let (bob, joined_b) = s.joined("bob", "turn-room").await;
    // The advertised URLs carry the port actually bound.
    let urls = &joined_a["iceServers"][0]["urls"];
    ensure!(
        *urls
            == json!([format!("turn:127.0.0.1:{port}?transport=udp"), format!("turn:127.0.0.1:{port}?transport=tcp")]),
        "iceServers: {}",
        joined_a["iceServers"]
    );
    let a = PeerOptions::relay_through(&joined_a["iceServers"])?;
    let b = PeerOptions::relay_through(&joined_b["iceServers"])?;
    let call = connect_with(alice, bob, a, b).await?;
    assert_relayed(&call).await?;
    exchange(&call.dc_a, &call.dc_b, "relayed hello", "relayed reply").await?;
    // One allocation per peer (the gauge counts every server of this test process).
    let allocations = metric(&s, "switchboard_turn_allocations", "").await;
    ensure!(allocations >= 2.0, "switchboard_turn_allocations = {allocations}");
    call.hang_up().await?;
    s.stop().await;
    Ok(())
}

/// The client side of TURN over TCP: one connection to the server as a packet `Conn`, framed
/// as the server frames it.
struct TcpToServer {
    server: SocketAddr,
    local: SocketAddr,
    rd: tokio::sync::Mutex<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
}

impl TcpToServer {
    async fn connect(server: SocketAddr) -> Result<TcpToServer> {
        let stream = tokio::net::TcpStream::connect(server).await?;
        let local = stream.local_addr()?;
        let (rd, wr) = stream.into_split();
        Ok(TcpToServer { server, local, rd: rd.into(), wr: wr.into() })
    }
}

#[async_trait]
impl Conn for TcpToServer {
    async fn connect(&self, _: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let frame = read_frame(&mut *self.rd.lock().await).await?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok((n, self.server))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.send_to(buf, self.server).await
    }
    async fn send_to(&self, buf: &[u8], _: SocketAddr) -> webrtc_util::Result<usize> {
        use tokio::io::AsyncWriteExt;
        self.wr.lock().await.write_all(&stream_frame(buf)).await?;
        Ok(buf.len())
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.server)
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[derive(Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

/// A `turn` crate client of the server at `server`, listening.
async fn turn_client(server: SocketAddr, transport: Transport, username: &str, password: &str) -> Result<TurnClient> {
    let conn: Arc<dyn Conn + Send + Sync> = match transport {
        Transport::Udp => Arc::new(UdpSocket::bind("127.0.0.1:0").await?),
        Transport::Tcp => Arc::new(TcpToServer::connect(server).await?),
    };
    let client = TurnClient::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.to_owned(),
        password: password.to_owned(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await?;
    client.listen().await?;
    Ok(client)
}

/// An Allocate with this credential: the relay address, or the server's refusal.
async fn allocate(server: SocketAddr, transport: Transport, username: &str, password: &str) -> Result<SocketAddr> {
    let client = turn_client(server, transport, username, password).await?;
    let relayed = timeout(WAIT, client.allocate()).await.context("no answer to the Allocate")?;
    let result = relayed.map_err(|e| anyhow!("{e}")).and_then(|relay| Ok(relay.local_addr()?));
    client.close().await?;
    result
}

fn credential(expiry: i64, user: &str) -> (String, String) {
    let username = format!("{expiry}:{user}");
    let password = turn_password(TURN_SECRET, &username);
    (username, password)
}

/// Relays a datagram each way between a relay allocated through `server` and a plain UDP peer.
async fn relay_round_trip(server: SocketAddr, transport: Transport, username: &str, password: &str) -> Result<()> {
    let client = turn_client(server, transport, username, password).await?;
    let relay = timeout(WAIT, client.allocate()).await??;
    let peer = UdpSocket::bind("127.0.0.1:0").await?;
    let peer_addr = peer.local_addr()?;
    // The first send asks for the permission, so it arrives once the server allows the peer.
    timeout(WAIT, relay.send_to(b"to the peer", peer_addr)).await??;
    let mut buf = [0u8; 64];
    let (n, from) = timeout(WAIT, peer.recv_from(&mut buf)).await??;
    ensure!(&buf[..n] == b"to the peer", "the peer got {:?}", &buf[..n]);
    ensure!(from == relay.local_addr()?, "relayed from {from}, not from the relay address");
    peer.send_to(b"to the client", from).await?;
    let (n, back_from) = timeout(WAIT, relay.recv_from(&mut buf)).await??;
    ensure!(&buf[..n] == b"to the client" && back_from == peer_addr, "the client got {:?} from {back_from}", &buf[..n]);
    relay.close().await?;
    client.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_relays_over_udp_and_tcp_with_issued_credentials() -> Result<()> {
    let mut s = node_with_turn(|c| c.turn.relay_ports = (40000, 49000)).await;
    let server = turn_addr(&s);
    // The credential the node hands out over HTTP.
    let token = s.token(json!({"userId": "carol"})).await;
    let ice = get_json_as(&s.url("/ice-servers"), &token).await;
    let turn = &ice["iceServers"][0];
    let (username, password) =
        (turn["username"].as_str().expect("username"), turn["credential"].as_str().expect("credential"));
    for transport in [Transport::Udp, Transport::Tcp] {
        let relayed = allocate(server, transport, username, password).await?;
        ensure!(relayed.ip().is_loopback() && (40000..=49000).contains(&relayed.port()), "relay address {relayed}");
        relay_round_trip(server, transport, username, password).await?;
    }
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_refuses_expired_wrong_and_malformed_credentials() -> Result<()> {
    let mut s = node_with_turn(|_| {}).await;
    let server = turn_addr(&s);
    let now = switchboard::auth::unix_now();
    let expired_before = metric(&s, "switchboard_turn_auth_failures_total", "reason=\"expired\"").await;
    let password_before = metric(&s, "switchboard_turn_auth_failures_total", "reason=\"password\"").await;

    for transport in [Transport::Udp, Transport::Tcp] {
        let (username, password) = credential(now - 60, "mallory");
        let refused = allocate(server, transport, &username, &password).await.expect_err("an expired credential");
        ensure!(refused.to_string().contains("401"), "expired: {refused}");

        let (username, _) = credential(now + 600, "mallory");
        let refused = allocate(server, transport, &username, "not-the-password").await.expect_err("a wrong password");
        ensure!(refused.to_string().contains("400"), "wrong password: {refused}");
    }
    let password = turn_password(TURN_SECRET, "mallory");
    allocate(server, Transport::Udp, "mallory", &password).await.expect_err("a username without an expiry");
    // Signed with another secret: the same as a wrong password.
    let username = format!("{}:mallory", now + 600);
    allocate(server, Transport::Udp, &username, &turn_password("another-secret", &username))
        .await
        .expect_err("another secret");

    let expired = metric(&s, "switchboard_turn_auth_failures_total", "reason=\"expired\"").await - expired_before;
    let wrong = metric(&s, "switchboard_turn_auth_failures_total", "reason=\"password\"").await - password_before;
    ensure!(expired >= 2.0 && wrong >= 3.0, "auth failures counted: expired +{expired}, password +{wrong}");
    // A credential that is still valid works on the same server.
    let (username, password) = credential(now + 600, "alice");
    allocate(server, Transport::Udp, &username, &password).await?;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_outside_the_relay_policy_are_refused() -> Result<()> {
    // A relay on loopback serves loopback peers by default; told to deny internal peers, it
    // refuses them (as a public relay does by default).
    let mut s = node_with_turn(|c| c.turn.deny_internal_peers = Some(true)).await;
    let server = turn_addr(&s);
    let (username, password) = credential(switchboard::auth::unix_now() + 600, "alice");
    let client = turn_client(server, Transport::Udp, &username, &password).await?;
    let relay = timeout(WAIT, client.allocate()).await??;
    let peer = UdpSocket::bind("127.0.0.1:0").await?;
    let refused = timeout(WAIT, relay.send_to(b"to a loopback service", peer.local_addr()?)).await?;
    let refused = refused.expect_err("a loopback peer is refused");
    ensure!(refused.to_string().contains("403"), "{refused}");
    ensure!(metric(&s, "switchboard_turn_peers_denied_total", "").await >= 1.0, "denied peers counted");
    client.close().await?;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_its_quota_of_allocations() -> Result<()> {
    let mut s = node_with_turn(|c| c.turn.allocations_per_user = 2).await;
    let server = turn_addr(&s);
    let now = switchboard::auth::unix_now();
    let (username, password) = credential(now + 600, "greedy");
    // Two live allocations, one over UDP and one over TCP: the quota counts both listeners.
    let (udp, tcp) = (
        turn_client(server, Transport::Udp, &username, &password).await?,
        turn_client(server, Transport::Tcp, &username, &password).await?,
    );
    let first = timeout(WAIT, udp.allocate()).await??;
    let _second = timeout(WAIT, tcp.allocate()).await??;
    let refused = allocate(server, Transport::Udp, &username, &password).await.expect_err("a third allocation");
    ensure!(refused.to_string().contains("486"), "over the quota: {refused}");
    ensure!(metric(&s, "switchboard_turn_quota_refusals_total", "").await >= 1.0, "quota refusals counted");
    // Another user has a quota of its own, even with a credential issued at the same time.
    let (other, other_password) = credential(now + 600, "modest");
    allocate(server, Transport::Udp, &other, &other_password).await?;
    // Once one of the two ends (its client refreshes it to a lifetime of zero), another fits.
    first.close().await?;
    let mut again = None;
    for _ in 0..50 {
        match allocate(server, Transport::Udp, &username, &password).await {
            Ok(relayed) => {
                again = Some(relayed);
                break;
            }
            Err(e) if e.to_string().contains("486") => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(e) => return Err(e),
        }
    }
    ensure!(again.is_some(), "the quota frees up when an allocation ends");
    udp.close().await?;
    tcp.close().await?;
    s.stop().await;
    Ok(())
}

/// A node started as `switchboard serve` runs TURN by default, with a secret it generates into
/// its data directory, and hands out credentials that secret signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_runs_turn_by_default_with_a_generated_secret() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Node::spawn puts the TURN listener on port 0; nothing else is configured.
    let node = Node::spawn(dir.path(), &[]);
    let log = node.log();
    let port: u16 = log
        .split("turn server listening on udp and tcp 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no turn listening line in the log:\n{log}"))?;
    let secret = std::fs::read_to_string(dir.path().join("turn_secret"))?;
    let token = node_token(node.addr, "dave").await;
    let ice = get_json_as(&node.url("/ice-servers"), &token).await;
    let turn: &Value = &ice["iceServers"][0];
    ensure!(turn["urls"][0] == format!("turn:127.0.0.1:{port}?transport=udp"), "{ice}");
    let username = turn["username"].as_str().expect("username");
    ensure!(turn["credential"] == turn_password(secret.trim(), username), "signed with the generated secret");
    let server: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    allocate(server, Transport::Udp, username, turn["credential"].as_str().expect("credential")).await?;
    Ok(())
}

/// Debian's coturn on a free loopback port, with `use-auth-secret`; killed on drop.
struct Coturn {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Coturn {
    const BINARY: &str = "/usr/bin/turnserver";

    /// Starts coturn and waits (bounded) until it answers a STUN Binding request; `None`, with a
    /// loud note, when coturn is not installed.
    async fn start(test: &str, secret: &str, realm: &str) -> Result<Option<Coturn>> {
        if !std::path::Path::new(Self::BINARY).exists() {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED ({test}): coturn is not installed ({} missing); apt-get install coturn",
                Self::BINARY
            );
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        // A port free for UDP and TCP alike, given to coturn (it cannot report one it picked).
        let port = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let port = udp.local_addr()?.port();
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let child = std::process::Command::new(Self::BINARY)
            // Command line only: no /etc/turnserver.conf, no shared database, no CLI port.
            .arg("-n")
            .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", &format!("--listening-port={port}")])
            .args(["--use-auth-secret", &format!("--static-auth-secret={secret}"), &format!("--realm={realm}")])
            .args(["--no-cli", "--no-tls", "--no-dtls", "--no-rfc5780", "--fingerprint", "--no-multicast-peers"])
            // Both peers of the test relay from 127.0.0.1: each one's relay address is a
            // loopback peer of the other's allocation, which coturn refuses unless told.
            // Production configs never allow it (deploy/coturn/turnserver.conf denies them).
            .arg("--allow-loopback-peers")
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .arg(format!("--pidfile={}", dir.path().join("turnserver.pid").display()))
            .args(["--log-file=stdout", "--simple-log"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start turnserver")?;
        let coturn = Coturn { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir };
        coturn.until_answering().await?;
        Ok(Some(coturn))
    }

    /// A STUN Binding request every 100 ms until one is answered, for at most `WAIT`.
    async fn until_answering(&self) -> Result<()> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(&rand::random::<[u8; 12]>());
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut buf = [0u8; 512];
        while tokio::time::Instant::now() < deadline {
            socket.send_to(&request, self.addr).await?;
            if let Ok(Ok((n, _))) = timeout(std::time::Duration::from_millis(100), socket.recv_from(&mut buf)).await
                && n >= 20
                && buf[..2] == [0x01, 0x01]
            {
                return Ok(());
            }
        }
        Err(anyhow!("coturn did not answer on {} within {WAIT:?}", self.addr))
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_relays_a_call_with_switchboard_credentials() -> Result<()> {
    let test = "coturn_relays_a_call_with_switchboard_credentials";
    let Some(coturn) = Coturn::start(test, TURN_SECRET, "switchboard-coturn").await? else { return Ok(()) };
    // The node points its clients at coturn: ice.turn_urls, and ice.turn_secret = coturn's
    // static-auth-secret. Its own TURN server stays off (test_config).
    let url = format!("turn:{}?transport=udp", coturn.addr);
    let mut s = TestServer::start_with(|c| {
        c.ice.turn_urls = vec![url.clone()];
        c.ice.turn_secret = Some(TURN_SECRET.into());
    })
    .await;
    let (alice, joined_a) = s.joined("alice", "coturn-room").await;
    let (bob, joined_b) = s.joined("bob", "coturn-room").await;
    ensure!(joined_a["iceServers"].as_array().map(Vec::len) == Some(1), "only coturn: {}", joined_a["iceServers"]);
    ensure!(joined_a["iceServers"][0]["urls"] == json!([url]), "{}", joined_a["iceServers"]);
    let a = PeerOptions::relay_through(&joined_a["iceServers"])?;
    let b = PeerOptions::relay_through(&joined_b["iceServers"])?;
    let call = connect_with(alice, bob, a, b).await?;
    assert_relayed(&call).await?;
    exchange(&call.dc_a, &call.dc_b, "through coturn", "and back").await?;
    call.hang_up().await?;

    // coturn refuses what Switchboard would refuse.
    let now = switchboard::auth::unix_now();
    let (username, password) = credential(now - 60, "mallory");
    allocate(coturn.addr, Transport::Udp, &username, &password)
        .await
        .expect_err("coturn refuses an expired credential");
    let (username, _) = credential(now + 600, "mallory");
    allocate(coturn.addr, Transport::Udp, &username, "not-the-password")
        .await
        .expect_err("coturn refuses a wrong password");
    // The same client code is accepted with a valid credential, so the refusals above are the
    // credentials' doing.
    let (username, password) = credential(now + 600, "alice");
    allocate(coturn.addr, Transport::Udp, &username, &password).await?;
    s.stop().await;
    Ok(())
}

/// coturn's test client, `turnutils_uclient`, against the embedded server: a pair of clients
/// (`-y`) relaying to each other through it, over UDP and over TCP (a third-party framing of
/// TURN over TCP), then an expired credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturns_client_relays_through_the_embedded_server() -> Result<()> {
    const UCLIENT: &str = "/usr/bin/turnutils_uclient";
    if !std::path::Path::new(UCLIENT).exists() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (coturns_client_relays_through_the_embedded_server): {UCLIENT} missing; apt-get install coturn"
        );
        return Ok(());
    }
    let mut s = node_with_turn(|_| {}).await;
    let server = turn_addr(&s);
    let uclient = |flags: &'static [&'static str], username: String, password: String| async move {
        let port = server.port().to_string();
        let mut command = tokio::process::Command::new(UCLIENT);
        command.args(flags).args(["-y", "-n", "10", "-m", "1", "-e", "127.0.0.1"]);
        command.args(["-u", &username, "-w", &password, "-p", &port, "127.0.0.1"]).kill_on_drop(true);
        let out = timeout(std::time::Duration::from_secs(60), command.output()).await??;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        Ok::<_, anyhow::Error>((out.status.success(), text))
    };
    let now = switchboard::auth::unix_now();
    for (name, flags) in [("udp", &[][..]), ("tcp", &["-t"][..])] {
        let (username, password) = credential(now + 600, "uclient");
        let (ok, text) = uclient(flags, username, password).await?;
        // Its summary: "tot_send_msgs=20, tot_recv_msgs=20" and "Total lost packets 0 (...)".
        let counts = text.lines().rev().find_map(|l| {
            let sent = l.split("tot_send_msgs=").nth(1)?.split(',').next()?.trim().parse::<u32>().ok()?;
            let received = l.split("tot_recv_msgs=").nth(1)?.split(',').next()?.trim().parse::<u32>().ok()?;
            Some((sent, received))
        });
        ensure!(ok && text.contains("Total lost packets 0 "), "{name}: uclient failed:\n{text}");
        ensure!(matches!(counts, Some((sent, received)) if sent > 0 && sent == received), "{name}: {counts:?}\n{text}");
    }
    let (username, password) = credential(now - 60, "uclient");
    let (ok, text) = uclient(&[], username, password).await?;
    ensure!(!ok && text.contains("401"), "an expired credential must be refused:\n{text}");
    s.stop().await;
    Ok(())
}
