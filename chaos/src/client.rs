//! A signaling client that behaves as a careful application would: it joins a room through
//! any live node, numbers its messages with ids, keeps each until it is acknowledged, and when
//! its connection breaks (node killed, frozen, drained, socket dropped) it reconnects to
//! another node, resumes its session and sends again what was not acknowledged. It records
//! everything in the [`Ledger`]: what it sent, what was acknowledged, what it received (and
//! checks the per-session `seq` numbering while doing so).
//!
//! The application on top (a numbered message stream, or a WebRTC peer) hands it frames
//! without `peerId` or `id`; it addresses them to the partner and numbers them.

use crate::ledger::Ledger;
use crate::nodes::Directory;
use anyhow::{Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client pings when it has sent nothing for this long...
const PING_EVERY: Duration = Duration::from_secs(1);
/// ...and hearing nothing from the server for this long means the connection's node is
/// frozen (or the path to it is gone): go elsewhere.
const STALE_AFTER: Duration = Duration::from_millis(2500);
/// Acknowledged messages kept until their `delivered` comes (see `come_back`); as many as a
/// client names in `resume`'s `received`, so receivers can drop the repeats.
const MAX_UNDELIVERED: usize = 256;
/// Messages confirmed delivered that are still sent again after a resume.
const RECENTLY_DELIVERED: usize = 16;
/// A client that cannot get back in within this long gives up (and the run fails).
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// What the harness can ask of a client.
pub enum Command {
    /// Drop the socket without a close handshake (a lost network); the client comes back.
    DropSocket,
    /// Drop the socket and stay away this long before coming back (a client whose network is
    /// gone for a while: its session waits in the room).
    Away(Duration),
    /// Leave the room and stop.
    Leave(oneshot::Sender<()>),
}

/// Who a client is.
#[derive(Clone)]
pub struct Spec {
    pub user: String,
    pub partner: String,
    pub room: String,
    pub seed: u64,
}

/// The harness's side of a running client.
pub struct Handle {
    pub commands: UnboundedSender<Command>,
}

/// The application's side: frames to send (addressed and numbered by the client) and the
/// relayed frames that arrived from the partner.
pub struct AppLink {
    pub outgoing: UnboundedSender<Value>,
    pub incoming: UnboundedReceiver<Value>,
}

struct Unacked {
    text: String,
    sent_at: Instant,
}

struct Client {
    spec: Spec,
    directory: Arc<Directory>,
    ledger: Arc<Ledger>,
    http: reqwest::Client,
    rng: StdRng,
    ws: Option<Ws>,
    node: Option<SocketAddr>,
    /// Session id and resume token.
    session: Option<(String, String)>,
    last_seq: u64,
    partner_peer: Option<String>,
    next_id: u64,
    unacked: BTreeMap<u64, Unacked>,
    /// Acknowledged messages whose `delivered` has not come yet, by id.
    undelivered: BTreeMap<u64, String>,
    /// The latest messages confirmed delivered: the target's node may have died before its
    /// client read them, so they go again after a resume too.
    recently_delivered: BTreeMap<u64, String>,
    last_heard: Instant,
    last_sent: Instant,
    /// The latest relayed messages received, as (`peerId`, `msgId`), named in `resume`.
    received: std::collections::VecDeque<Value>,
    to_app: UnboundedSender<Value>,
}

/// Starts a client task; returns the harness's handle and the application's link.
pub fn spawn(spec: Spec, directory: Arc<Directory>, ledger: Arc<Ledger>) -> (Handle, AppLink) {
    let (commands, command_rx) = unbounded_channel();
    let (outgoing, outgoing_rx) = unbounded_channel();
    let (to_app, incoming) = unbounded_channel();
    let client = Client {
        rng: StdRng::seed_from_u64(spec.seed),
        spec,
        directory,
        ledger,
        http: reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("http client"),
        ws: None,
        node: None,
        session: None,
        last_seq: 0,
        partner_peer: None,
        next_id: 0,
        unacked: BTreeMap::new(),
        undelivered: BTreeMap::new(),
        recently_delivered: BTreeMap::new(),
        last_heard: Instant::now(),
        last_sent: Instant::now(),
        received: std::collections::VecDeque::new(),
        to_app,
    };
    tokio::spawn(async move {
        let user = client.spec.user.clone();
        let ledger = client.ledger.clone();
        if let Err(e) = client.run(command_rx, outgoing_rx).await {
            ledger.violation(format!("client {user} stopped: {e:#}"));
        }
    });
    (Handle { commands }, AppLink { outgoing, incoming })
}

impl Client {
    async fn run(
        mut self,
        mut commands: UnboundedReceiver<Command>,
        mut outgoing: UnboundedReceiver<Value>,
    ) -> Result<()> {
        let mut watchdog = tokio::time::interval(Duration::from_millis(250));
        // The application may finish before the harness asks the client to leave.
        let mut app_open = true;
        loop {
            if self.ws.is_none() {
                self.come_back().await?;
            }
            let ready = app_open && self.partner_peer.is_some();
            let Some(ws) = self.ws.as_mut() else { continue };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::DropSocket) => {
                        self.ledger.count("socket_drops");
                        self.ws = None;
                    }
                    Some(Command::Away(hold)) => {
                        self.ledger.count("away");
                        self.ws = None;
                        tokio::time::sleep(hold).await;
                    }
                    Some(Command::Leave(done)) => {
                        let _ = ws.send(Message::text(json!({"type": "leave"}).to_string())).await;
                        let _ = ws.close(None).await;
                        let _ = done.send(());
                        return Ok(());
                    }
                    None => return Ok(()),
                },
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(&text)?,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        self.ledger.count("connections_lost");
                        self.ledger.note(format!("{} lost its connection to {:?}", self.spec.user, self.node));
                        self.ws = None;
                    }
                    Some(Ok(_)) => {}
                },
                frame = outgoing.recv(), if ready => {
                    match frame {
                        Some(frame) => self.send_new(frame).await,
                        None => app_open = false,
                    }
                }
                _ = watchdog.tick() => {
                    if self.last_heard.elapsed() > STALE_AFTER {
                        self.ledger.count("stale_connections_left");
                        self.ledger.note(format!("{} left a silent connection to {:?}", self.spec.user, self.node));
                        self.ws = None;
                    } else if self.last_sent.elapsed() > PING_EVERY {
                        self.write(json!({"type": "ping"}).to_string()).await;
                    }
                }
            }
        }
    }

    /// Numbers and addresses an application frame, keeps it until acknowledged, sends it.
    async fn send_new(&mut self, mut frame: Value) {
        let Some(partner) = self.partner_peer.clone() else { return };
        let id = self.next_id;
        self.next_id += 1;
        frame["peerId"] = json!(partner);
        frame["id"] = json!(id);
        frame["receipt"] = json!(true);
        let text = frame.to_string();
        self.ledger.sent(&self.spec.user, &self.spec.partner, id);
        self.unacked.insert(id, Unacked { text: text.clone(), sent_at: Instant::now() });
        self.write(text).await;
    }

    async fn write(&mut self, text: String) {
        self.last_sent = Instant::now();
        if let Some(ws) = self.ws.as_mut()
            && ws.send(Message::text(text)).await.is_err()
        {
            self.ws = None;
        }
    }

    fn on_frame(&mut self, text: &str) -> Result<()> {
        self.last_heard = Instant::now();
        let v: Value = serde_json::from_str(text).map_err(|e| anyhow!("server sent bad JSON ({e}): {text}"))?;
        self.check_seq(&v);
        match v["type"].as_str().unwrap_or_default() {
            "ack" => {
                if let Some(id) = v["ref"].as_u64()
                    && let Some(u) = self.unacked.remove(&id)
                {
                    self.ledger.acked(&self.spec.user, &self.spec.partner, id, u.sent_at);
                    self.undelivered.insert(id, u.text);
                    while self.undelivered.len() > MAX_UNDELIVERED {
                        self.ledger.count("undelivered_forgotten");
                        self.undelivered.pop_first();
                    }
                }
            }
            "delivered" => {
                if let Some(id) = v["ref"].as_u64()
                    && let Some(text) = self.undelivered.remove(&id)
                {
                    self.recently_delivered.insert(id, text);
                    while self.recently_delivered.len() > RECENTLY_DELIVERED {
                        self.recently_delivered.pop_first();
                    }
                }
            }
            "offer" | "answer" | "ice-candidate" => {
                if v["peerId"].as_str() != self.partner_peer.as_deref() {
                    self.ledger.count("relayed_from_unknown_peer");
                }
                match v["msgId"].as_u64() {
                    Some(id) => self.ledger.delivered(&self.spec.partner, &self.spec.user, id),
                    None => self.ledger.count("relayed_without_id"),
                }
                self.received.push_back(json!({"peerId": v["peerId"], "msgId": v["msgId"]}));
                while self.received.len() > MAX_UNDELIVERED {
                    self.received.pop_front();
                }
                let _ = self.to_app.send(v);
            }
            "peer_joined" | "peer_resumed"
                if v["participant"]["userId"] == self.spec.partner.as_str() || v["type"] == "peer_resumed" =>
            {
                self.partner_peer = v["peerId"].as_str().map(str::to_owned).or(self.partner_peer.take());
            }
            "peer_left" if v["peerId"].as_str() == self.partner_peer.as_deref() => {
                self.ledger.count("partner_left");
                self.partner_peer = None;
            }
            "goaway" => {
                self.ledger.count("goaways");
                // The node is draining: go to another one now, while it still hands over.
                self.ws = None;
            }
            "error" => {
                let code = v["code"].as_str().unwrap_or_default();
                match code {
                    // The room is being re-homed; the edge keeps the message and sends it again.
                    "room_unavailable" => self.ledger.count("error_room_unavailable"),
                    "room_elsewhere" | "not_joined" => {
                        // The session ended with a move: join again.
                        self.ledger.count("sessions_lost");
                        self.ledger.violation(format!("{} lost its session: {v}", self.spec.user));
                        self.session = None;
                        self.ws = None;
                    }
                    "rate_limited" => self.ledger.count("error_rate_limited"),
                    _ => {
                        self.ledger.count("errors_other");
                        self.ledger.violation(format!("{} got an unexpected error: {v}", self.spec.user));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Every server frame is numbered one more than the last (`goaway` repeats it).
    fn check_seq(&mut self, v: &Value) {
        let Some(seq) = v["seq"].as_u64() else {
            self.ledger.violation(format!("{}: a frame without seq: {v}", self.spec.user));
            return;
        };
        let expected = if v["type"] == "goaway" { self.last_seq } else { self.last_seq + 1 };
        if seq != expected {
            self.ledger.count("seq_gaps");
            self.ledger.violation(format!("{}: seq {seq} where {expected} was due ({})", self.spec.user, v["type"]));
        }
        self.last_seq = seq;
    }

    /// Gets back into the room: a new connection to a live node (another one than before if
    /// there is a choice), `resume` if there is a session, else `join`; then everything still
    /// unacknowledged goes again, in order.
    async fn come_back(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if started.elapsed() > GIVE_UP_AFTER {
                bail!("could not get back into {} within {GIVE_UP_AFTER:?}", self.spec.room);
            }
            let live = self.directory.live();
            let choices: Vec<SocketAddr> = live.iter().map(|(_, a)| *a).filter(|a| Some(*a) != self.node).collect();
            let pool = if choices.is_empty() { live.iter().map(|(_, a)| *a).collect() } else { choices };
            if pool.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let addr = pool[self.rng.random_range(0..pool.len())];
            match self.enter(addr).await {
                Ok(resumed) => {
                    self.node = Some(addr);
                    self.ledger.connected_to(&self.spec.user, &addr.to_string());
                    self.last_heard = Instant::now();
                    if attempt > 1 || self.session.is_some() {
                        self.ledger.count("reconnects");
                    }
                    // After a resume, as the protocol advises: what was acknowledged but not yet
                    // confirmed delivered goes again (the edge that kept it may have died with
                    // its node), then everything not acknowledged, in order. Repeats are dropped
                    // by rooms and receivers.
                    let mut again: Vec<String> = if resumed {
                        let mut both: BTreeMap<u64, String> = self.recently_delivered.clone();
                        both.extend(self.undelivered.iter().map(|(id, text)| (*id, text.clone())));
                        both.into_values().collect()
                    } else {
                        Vec::new()
                    };
                    again.extend(self.unacked.values().map(|u| u.text.clone()));
                    for text in again {
                        self.write(text).await;
                    }
                    return Ok(());
                }
                Err(_) => {
                    self.ws = None;
                    self.node = Some(addr);
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(5)))).await;
                }
            }
        }
    }

    /// Connects to `addr` and resumes the session (true) or joins afresh (false).
    async fn enter(&mut self, addr: SocketAddr) -> Result<bool> {
        let token: Value = self
            .http
            .post(format!("http://{addr}/auth/token"))
            .json(&json!({"userId": self.spec.user}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = token["token"].as_str().ok_or_else(|| anyhow!("no token"))?;
        let url = format!("ws://{addr}/ws/signal?token={token}");
        let (ws, _) = tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(url)).await??;
        self.ws = Some(ws);
        if let Some((session, resume_token)) = self.session.clone() {
            let resume = json!({
                "type": "resume",
                "sessionId": session,
                "resumeToken": resume_token,
                "lastSeq": self.last_seq,
                "received": self.received,
            });
            self.write(resume.to_string()).await;
            let first = self.first_frame().await?;
            match first["type"].as_str() {
                Some("resumed") => {
                    self.ledger.note(format!(
                        "{} resumed at {addr} lastSeq {} replayed {}",
                        self.spec.user, self.last_seq, first["replayed"]
                    ));
                    // `resumed` carries the client's lastSeq; the replay follows it.
                    self.last_seq = first["seq"].as_u64().unwrap_or(self.last_seq);
                    self.ledger.count("resumes");
                    return Ok(true);
                }
                Some("resume_failed") if first["reason"] == "unavailable" => {
                    // The session is still held; its room is not reachable yet.
                    self.ledger.count("resumes_unavailable");
                    bail!("resume: room unavailable");
                }
                Some("resume_failed") => {
                    self.ledger.count("resumes_failed");
                    self.ledger.violation(format!("{} could not resume: {first}", self.spec.user));
                    self.session = None;
                    self.unacked.clear();
                    self.last_seq = first["seq"].as_u64().unwrap_or(0);
                }
                _ => bail!("unexpected answer to resume: {first}"),
            }
        } else {
            self.last_seq = 0;
        }
        self.write(json!({"type": "join", "roomId": self.spec.room}).to_string()).await;
        let joined = self.first_frame().await?;
        if joined["type"] != "joined" {
            bail!("unexpected answer to join: {joined}");
        }
        self.last_seq = joined["seq"].as_u64().unwrap_or(1);
        let peer = joined["peerId"].as_str().ok_or_else(|| anyhow!("joined without peerId"))?.to_owned();
        let token = joined["resumeToken"].as_str().ok_or_else(|| anyhow!("joined without resumeToken"))?.to_owned();
        self.ledger.session(&self.spec.user, &peer);
        self.ledger.note(format!("{} joined at {addr} as {peer}", self.spec.user));
        self.session = Some((peer, token));
        self.partner_peer = joined["participants"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["userId"] == self.spec.partner.as_str())
                .and_then(|p| p["peerId"].as_str().map(str::to_owned))
        });
        Ok(false)
    }

    /// The first text frame on a fresh connection (within 5 s).
    async fn first_frame(&mut self) -> Result<Value> {
        let ws = self.ws.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let frame = tokio::time::timeout_at(deadline, ws.next()).await?;
            match frame {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
                Some(Ok(Message::Close(f))) => bail!("closed: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("closed"),
            }
        }
    }
}
