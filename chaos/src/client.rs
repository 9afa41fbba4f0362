//! A chaos client: the `switchboard-client` crate's careful client (ids, acks, receipts,
//! reconnect to another live node, resume, sending again what may be missing, `received` in
//! resume), driven by the harness and recorded in the [`Ledger`]: what it sent, what was
//! acknowledged, what it received, and every protocol violation it saw (a `seq` gap, a lost
//! session, an unexpected error).
//!
//! The application on top (a numbered message stream, or a WebRTC peer) hands it frames
//! without `peerId` or `id`; it addresses them to the partner, and the crate numbers them.

use crate::ledger::Ledger;
use crate::nodes::Directory;
use anyhow::{Result, bail};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_client::{
    Backoff, Client, ClientConfig, Code, Event, JoinOptions, ReconnectReason, TokenFuture, TokenSource,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;

/// A client pings when it has sent nothing for this long...
const PING_EVERY: Duration = Duration::from_secs(1);
/// ...and hearing nothing from the server for this long means the connection's node is
/// frozen (or the path to it is gone): go elsewhere.
const STALE_AFTER: Duration = Duration::from_millis(2500);
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

/// Starts a client task; returns the harness's handle and the application's link.
pub fn spawn(spec: Spec, directory: Arc<Directory>, ledger: Arc<Ledger>) -> (Handle, AppLink) {
    let (commands, command_rx) = unbounded_channel();
    let (outgoing, outgoing_rx) = unbounded_channel();
    let (to_app, incoming) = unbounded_channel();
    tokio::spawn(async move {
        let user = spec.user.clone();
        let recorder = ledger.clone();
        let run = Recorder { spec, ledger, partner_peer: None, sent_at: HashMap::new(), to_app };
        if let Err(e) = run.run(directory, command_rx, outgoing_rx).await {
            recorder.violation(format!("client {user} stopped: {e:#}"));
        }
    });
    (Handle { commands }, AppLink { outgoing, incoming })
}

/// The host:port of a signaling URL, as the ledger names nodes.
fn node_of(url: &str) -> String {
    url.trim_start_matches("ws://").split('/').next().unwrap_or_default().to_owned()
}

/// The crate's client configured as the chaos suite's careful application.
fn config(spec: &Spec, directory: Arc<Directory>) -> Result<ClientConfig> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let user = spec.user.clone();
    // Every connection attempt gets a token from the node it is about to open.
    let token = TokenSource::Fetch(Arc::new(move |url: &str| -> TokenFuture {
        let (http, user, node) = (http.clone(), user.clone(), node_of(url));
        Box::pin(async move {
            let answer: Value = http
                .post(format!("http://{node}/auth/token"))
                .json(&serde_json::json!({"userId": user}))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            answer["token"].as_str().map(str::to_owned).ok_or_else(|| "no token".to_owned())
        })
    }));
    let urls = move || directory.live().iter().map(|(_, a)| format!("ws://{a}/ws/signal")).collect::<Vec<_>>();
    let mut c = ClientConfig::new(String::new(), String::new());
    c.urls = urls();
    c.live_urls = Some(Arc::new(urls));
    c.token = token;
    c.reconnect = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        factor: 2.0,
        jitter: 0.5,
        give_up_after: Some(GIVE_UP_AFTER),
    };
    c.ping_every = PING_EVERY;
    c.stale_after = STALE_AFTER;
    c.connect_timeout = Duration::from_secs(2);
    c.answer_timeout = Duration::from_secs(5);
    c.receipts = true;
    c.seed = Some(spec.seed);
    Ok(c)
}

/// What a client records while the crate's client does the work.
struct Recorder {
    spec: Spec,
    ledger: Arc<Ledger>,
    partner_peer: Option<String>,
    /// When each message not yet acknowledged was handed to the client.
    sent_at: HashMap<u64, Instant>,
    to_app: UnboundedSender<Value>,
}

impl Recorder {
    async fn run(
        mut self,
        directory: Arc<Directory>,
        mut commands: UnboundedReceiver<Command>,
        mut outgoing: UnboundedReceiver<Value>,
    ) -> Result<()> {
        let config = config(&self.spec, directory)?;
        let started = Instant::now();
        // The cluster may still be settling: keep trying for a while. The join is the first
        // message of the connection, as it is for a fresh join after a failed resume.
        let mut client = loop {
            match Client::connect_to_room(config.clone(), &self.spec.room, JoinOptions::default()).await {
                Ok((c, _)) => break c,
                Err(e) if started.elapsed() > GIVE_UP_AFTER => bail!("could not join: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        if let Some(url) = client.current_url() {
            self.ledger.connected_to(&self.spec.user, &node_of(&url));
        }
        // The application may finish before the harness asks the client to leave.
        let mut app_open = true;
        loop {
            let ready = app_open && self.partner_peer.is_some();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::DropSocket) => {
                        self.ledger.count("socket_drops");
                        client.drop_socket()?;
                    }
                    Some(Command::Away(hold)) => {
                        self.ledger.count("away");
                        client.drop_socket_for(hold)?;
                    }
                    Some(Command::Leave(done)) => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), client.leave()).await;
                        client.close().await;
                        let _ = done.send(());
                        return Ok(());
                    }
                    None => return Ok(()),
                },
                frame = outgoing.recv(), if ready => match frame {
                    Some(frame) => self.send(&client, frame)?,
                    None => app_open = false,
                },
                event = client.next_event() => match event {
                    Some(event) => self.on_event(event)?,
                    None => bail!("the client stopped"),
                },
            }
        }
    }

    /// Addresses an application frame to the partner and hands it to the client, which
    /// numbers it, keeps it until acknowledged and confirmed, and sends it.
    fn send(&mut self, client: &Client, mut frame: Value) -> Result<()> {
        let Some(partner) = self.partner_peer.clone() else { return Ok(()) };
        let kind = frame["type"].as_str().unwrap_or("offer").to_owned();
        if let Some(fields) = frame.as_object_mut() {
            fields.remove("type");
        }
        let id = client.send_relay(&partner, &kind, frame)?;
        self.ledger.sent(&self.spec.user, &self.spec.partner, id.0);
        self.sent_at.insert(id.0, Instant::now());
        Ok(())
    }

    fn on_event(&mut self, event: Event) -> Result<()> {
        let user = self.spec.user.clone();
        match event {
            Event::Joined(joined) => {
                self.ledger.session(&user, &joined.peer_id);
                self.ledger.note(format!("{user} joined as {}", joined.peer_id));
                self.partner_peer = joined.peer_of_user(&self.spec.partner);
            }
            Event::PeerJoined { peer_id, participant } if participant["userId"] == self.spec.partner.as_str() => {
                self.partner_peer = Some(peer_id);
            }
            Event::PeerResumed { peer_id, .. } => self.partner_peer = Some(peer_id),
            Event::PeerLeft { peer_id, .. } if Some(&peer_id) == self.partner_peer.as_ref() => {
                self.ledger.count("partner_left");
                self.partner_peer = None;
            }
            Event::Acked(id) => {
                if let Some(at) = self.sent_at.remove(&id.0) {
                    self.ledger.acked(&user, &self.spec.partner, id.0, at);
                }
            }
            Event::Relayed { from, msg_id, payload, .. } => {
                if Some(&from) != self.partner_peer.as_ref() {
                    self.ledger.count("relayed_from_unknown_peer");
                }
                match msg_id.as_ref().and_then(Value::as_u64) {
                    Some(id) => self.ledger.delivered(&self.spec.partner, &user, id),
                    None => self.ledger.count("relayed_without_id"),
                }
                let _ = self.to_app.send(payload);
            }
            // A repeat the server let through: the ledger counts it as delivered twice, as
            // the suite did before the client dropped repeats itself.
            Event::RepeatDropped { msg_id, .. } => {
                self.ledger.count("repeats_dropped_by_client");
                if let Some(id) = msg_id.as_u64() {
                    self.ledger.delivered(&self.spec.partner, &user, id);
                }
            }
            Event::Reconnecting { reason } => match reason {
                ReconnectReason::Dropped | ReconnectReason::Closed { .. } => {
                    self.ledger.count("connections_lost");
                    self.ledger.note(format!("{user} lost its connection ({reason:?})"));
                }
                ReconnectReason::Stale => {
                    self.ledger.count("stale_connections_left");
                    self.ledger.note(format!("{user} left a silent connection"));
                }
                ReconnectReason::GoAway => self.ledger.count("goaways"),
                ReconnectReason::Requested | ReconnectReason::SessionLost => {}
            },
            Event::Reconnected { resumed, url } => {
                self.ledger.connected_to(&user, &node_of(&url));
                self.ledger.count("reconnects");
                if resumed {
                    self.ledger.count("resumes");
                    self.ledger.note(format!("{user} resumed at {}", node_of(&url)));
                }
            }
            Event::ResumeFailed { reason } if reason == "unavailable" => self.ledger.count("resumes_unavailable"),
            Event::ResumeFailed { reason } => {
                self.ledger.count("resumes_failed");
                self.ledger.violation(format!("{user} could not resume: {reason}"));
                // The session's relayed messages are gone with it.
                self.sent_at.clear();
            }
            Event::SeqGap { expected, got, frame } => {
                self.ledger.count("seq_gaps");
                self.ledger.violation(format!("{user}: seq {got} where {expected} was due ({})", frame["type"]));
            }
            Event::Error { code, message, reference } => match code {
                // The room is being re-homed; the edge keeps the message and sends it again.
                Code::RoomUnavailable => self.ledger.count("error_room_unavailable"),
                Code::RoomElsewhere | Code::NotJoined => {
                    self.ledger.count("sessions_lost");
                    self.ledger.violation(format!("{user} lost its session: {code}: {message}"));
                }
                Code::RateLimited => self.ledger.count("error_rate_limited"),
                _ => {
                    self.ledger.count("errors_other");
                    self.ledger
                        .violation(format!("{user} got an unexpected error: {code}: {message} (ref {reference:?})"));
                }
            },
            Event::Closed { reason } => bail!("{reason}"),
            _ => {}
        }
        Ok(())
    }
}
