//! The careful client: one session in one room, kept alive across broken connections.
//!
//! A [`Client`] is a handle on a task that owns the connection. The task numbers the messages
//! that need an answer (`id`), keeps each until the room acknowledges it, keeps relayed
//! messages sent with a receipt until their `delivered` comes, and when the connection breaks
//! (a dead or frozen node, a drain, a dropped socket) it reconnects to another node with
//! backoff and jitter, resumes the session, and sends again what docs/reliability.md says a
//! careful client must: its last 16 confirmed relayed messages and everything not yet
//! confirmed, then everything not acknowledged, in order and with the same ids. Relayed
//! messages it has already had are dropped (the server drops them too; this is the client's
//! own guard, and it is reported as [`Event::RepeatDropped`]).

use crate::backoff::Backoff;
use crate::connection::{RawConnection, SeqGap};
use crate::error::{Code, Error, Result};
use crate::event::{Event, Joined, ReconnectReason};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Relayed messages named in `resume`'s `received`, and remembered to drop repeats: the
/// protocol's limit.
const MAX_RECEIVED: usize = 256;
/// Acknowledged relayed messages kept until their `delivered` (the server keeps no more for
/// one connection either).
const MAX_UNDELIVERED: usize = 256;
/// Confirmed relayed messages still sent again after a resume: the target's node may have died
/// after writing them and before its client read them.
const RECENTLY_DELIVERED: usize = 16;

/// The id this client gave a message (`id` on the wire, `msgId` at its target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

/// A future that yields a token for a URL.
pub type TokenFuture = Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send>>;

/// Where tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    /// One token for every connection.
    Static(String),
    /// Asked before each connection attempt, with the URL about to be opened (a long-lived
    /// client outlives its tokens; a test cluster mints them per node).
    Fetch(Arc<dyn Fn(&str) -> TokenFuture + Send + Sync>),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Static(_) => f.write_str("TokenSource::Static(..)"),
            TokenSource::Fetch(_) => f.write_str("TokenSource::Fetch(..)"),
        }
    }
}

/// The nodes a client may use: a fixed list, or a function asked at each reconnect (for a
/// cluster whose live members change).
pub type LiveUrls = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How a [`Client`] connects and behaves.
#[derive(Clone)]
pub struct ClientConfig {
    /// Signaling URLs (`ws://host:port/ws/signal`) of the nodes to rotate through.
    pub urls: Vec<String>,
    /// When set, asked at each reconnect instead of `urls`.
    pub live_urls: Option<LiveUrls>,
    pub token: TokenSource,
    pub reconnect: Backoff,
    /// A ping is sent when nothing was sent for this long...
    pub ping_every: Duration,
    /// ...and a connection from which nothing was heard for this long is left for another
    /// node (a frozen node keeps its sockets open and silent).
    pub stale_after: Duration,
    /// Opening a WebSocket may take this long.
    pub connect_timeout: Duration,
    /// The answer to `join` or `resume` may take this long (a resume waits while its room
    /// moves, up to a lease lifetime).
    pub answer_timeout: Duration,
    /// Relayed messages ask for a `delivered` receipt.
    pub receipts: bool,
    /// Seeds the choice of nodes and the jitter (a replayable test); `None`: from the OS.
    pub seed: Option<u64>,
    /// TLS for `wss://` URLs (the caller picks roots and crypto provider).
    #[cfg(feature = "rustls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig").field("urls", &self.urls).field("token", &self.token).finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// One URL and one token, with the defaults for the rest.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> ClientConfig {
        ClientConfig {
            urls: vec![url.into()],
            live_urls: None,
            token: TokenSource::Static(token.into()),
            reconnect: Backoff::default(),
            ping_every: Duration::from_secs(5),
            stale_after: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(10),
            receipts: true,
            seed: None,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }

    /// The same, rotating through several nodes.
    pub fn with_urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> ClientConfig {
        self.urls = urls.into_iter().map(Into::into).collect();
        self
    }
}

/// Options of a join.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    pub display_name: Option<String>,
}

enum Command {
    Join { room: String, options: JoinOptions, reply: oneshot::Sender<Result<Joined>> },
    Send { id: u64, frame: Value, relayed: bool, reply: Option<oneshot::Sender<Result<Value>>> },
    Unnumbered(Value),
    DropSocket { hold: Duration },
    Leave { reply: oneshot::Sender<Result<()>> },
    Close { reply: oneshot::Sender<()> },
}

/// A Switchboard client: one connection at a time, one session, reconnecting by itself.
pub struct Client {
    commands: UnboundedSender<Command>,
    events: UnboundedReceiver<Event>,
    next_id: Arc<AtomicU64>,
    url: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to a node of the list that takes the token: each is tried once, in order from
    /// a random one (so that many clients spread over the nodes). A refused token fails with
    /// its code (`token_expired`...). A `ping` proves the token was taken; a client that knows
    /// its room can [`connect_to_room`](Self::connect_to_room) instead, whose first message is
    /// the join.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        Ok(Client::start(config, None).await?.0)
    }

    /// Connects and joins `room` with the join as the first message (its answer proves the
    /// token too); the session then follows the client across reconnects.
    pub async fn connect_to_room(config: ClientConfig, room: &str, options: JoinOptions) -> Result<(Client, Joined)> {
        let (client, joined) = Client::start(config, Some((room.to_owned(), options))).await?;
        let joined = joined.ok_or_else(|| Error::Protocol("no joined".into()))?;
        Ok((client, joined))
    }

    async fn start(config: ClientConfig, room: Option<(String, JoinOptions)>) -> Result<(Client, Option<Joined>)> {
        let mut task = Task::new(config);
        let mut urls = task.candidates();
        if urls.is_empty() {
            return Err(Error::Config("no URL to connect to".into()));
        }
        let (events_tx, events) = unbounded_channel();
        task.events = Some(events_tx);
        let start = task.rng.random_range(0..urls.len());
        urls.rotate_left(start);
        let mut last = Error::Config("no URL to connect to".into());
        for url in urls {
            task.room = room.clone();
            match task.enter(&url).await {
                Ok(_) => break,
                Err(e @ Error::Server { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        if task.conn.is_none() {
            return Err(last);
        }
        let joined = task.latest_joined.take();
        let (commands, command_rx) = unbounded_channel();
        let url = task.shared_url.clone();
        tokio::spawn(task.run(command_rx));
        Ok((Client { commands, events, next_id: Arc::new(AtomicU64::new(0)), url }, joined))
    }

    /// The URL of the node the client is connected to, or was last.
    pub fn current_url(&self) -> Option<String> {
        self.url.lock().ok().and_then(|u| u.clone())
    }

    /// Joins `room`; the session then follows the client across reconnects.
    pub async fn join(&self, room: &str, options: JoinOptions) -> Result<Joined> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Join { room: room.to_owned(), options, reply })?;
        answer.await.map_err(|_| Error::ClientClosed)?
    }

    /// Sends an `offer`, `answer` or `ice-candidate` (`kind`) to `peer`: `payload`'s fields
    /// (`sdp`, `candidate`...) with an id and, per the config, a receipt request. Returns at
    /// once with the id; [`Event::Acked`] and [`Event::Delivered`] follow.
    pub fn send_relay(&self, peer: &str, kind: &str, payload: Value) -> Result<MessageId> {
        let mut frame = match payload {
            Value::Object(_) => payload,
            other => json!({"payload": other}),
        };
        frame["type"] = json!(kind);
        frame["peerId"] = json!(peer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.command(Command::Send { id, frame, relayed: true, reply: None })?;
        Ok(MessageId(id))
    }

    /// Sends a chat message; resolves with its `ack` once the room stored it.
    pub async fn send_chat(&self, text: &str) -> Result<Value> {
        self.request(json!({"type": "chat", "text": text})).await
    }

    /// Sends any message with an id; resolves with its answer (`ack`, `pong`), or fails with
    /// the `error` whose `ref` is that id. Kept and sent again after a reconnect until answered.
    pub async fn request(&self, frame: Value) -> Result<Value> {
        let (reply, answer) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.command(Command::Send { id, frame, relayed: false, reply: Some(reply) })?;
        answer.await.map_err(|_| Error::ClientClosed)?
    }

    /// Sends a message without an id (no answer, not kept): `stats`, `overlay`...
    pub fn send(&self, frame: Value) -> Result<()> {
        self.command(Command::Unnumbered(frame))
    }

    /// The next event; `None` once the client has stopped and every event was read.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// An event if one is waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Closes the socket without a WebSocket close (a lost network): the client reconnects
    /// and resumes.
    pub fn drop_socket(&self) -> Result<()> {
        self.command(Command::DropSocket { hold: Duration::ZERO })
    }

    /// Like [`drop_socket`](Self::drop_socket), staying away `hold` before reconnecting (its
    /// session waits in the room meanwhile).
    pub fn drop_socket_for(&self, hold: Duration) -> Result<()> {
        self.command(Command::DropSocket { hold })
    }

    /// Leaves the room (waits for `left`); the connection stays open.
    pub async fn leave(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Leave { reply })?;
        answer.await.map_err(|_| Error::ClientClosed)?
    }

    /// Closes the connection with a handshake and stops the client. A session still in a room
    /// is ended by the server as `disconnected`; [`leave`](Self::leave) first to leave cleanly.
    pub async fn close(&self) {
        let (reply, answer) = oneshot::channel();
        if self.command(Command::Close { reply }).is_ok() {
            let _ = answer.await;
        }
    }

    fn command(&self, c: Command) -> Result<()> {
        self.commands.send(c).map_err(|_| Error::ClientClosed)
    }
}

/// A message with an id that waits for its answer.
struct Pending {
    text: String,
    relayed: bool,
    reply: Option<oneshot::Sender<Result<Value>>>,
}

struct Session {
    peer_id: String,
    resume_token: String,
}

/// The task that owns the connection and the session's state.
struct Task {
    config: ClientConfig,
    rng: StdRng,
    conn: Option<RawConnection>,
    url: Option<String>,
    /// The same, for [`Client::current_url`].
    shared_url: Arc<Mutex<Option<String>>>,
    events: Option<UnboundedSender<Event>>,
    /// The room to be in (set by `join`, cleared by `leave`), and its join options.
    room: Option<(String, JoinOptions)>,
    session: Option<Session>,
    join_wait: Option<oneshot::Sender<Result<Joined>>>,
    /// The latest `joined`, for [`Client::connect_to_room`].
    latest_joined: Option<Joined>,
    leave_wait: Option<oneshot::Sender<Result<()>>>,
    /// Messages with an id, not yet answered, by id (ids rise, so this is sending order).
    unacked: BTreeMap<u64, Pending>,
    /// Acknowledged relayed messages whose `delivered` has not come.
    undelivered: BTreeMap<u64, String>,
    /// The latest confirmed relayed messages (or acknowledged ones, without receipts).
    recent: BTreeMap<u64, String>,
    /// The latest relayed messages received, as (`peerId`, `msgId`).
    received: VecDeque<(String, Value)>,
    received_set: HashSet<(String, String)>,
    /// The `seq` of the session's last frame, named in `resume`.
    last_seq: u64,
    last_heard: Instant,
    last_sent: Instant,
}

/// What an entry of the `received` set is keyed by: a `msgId` may be any JSON value.
fn received_key(peer: &str, msg_id: &Value) -> (String, String) {
    (peer.to_owned(), msg_id.to_string())
}

impl Task {
    fn new(config: ClientConfig) -> Task {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Task {
            config,
            rng,
            conn: None,
            url: None,
            shared_url: Arc::new(Mutex::new(None)),
            events: None,
            room: None,
            session: None,
            join_wait: None,
            latest_joined: None,
            leave_wait: None,
            unacked: BTreeMap::new(),
            undelivered: BTreeMap::new(),
            recent: BTreeMap::new(),
            received: VecDeque::new(),
            received_set: HashSet::new(),
            last_seq: 0,
            last_heard: Instant::now(),
            last_sent: Instant::now(),
        }
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    fn candidates(&self) -> Vec<String> {
        match &self.config.live_urls {
            Some(live) => live(),
            None => self.config.urls.clone(),
        }
    }

    /// Another node than the current one if there is a choice, picked at random so that the
    /// clients of a dead node spread over the others.
    fn pick_url(&mut self) -> Option<String> {
        let all = self.candidates();
        let others: Vec<String> = all.iter().filter(|u| Some(*u) != self.url.as_ref()).cloned().collect();
        let pool = if others.is_empty() { all } else { others };
        if pool.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..pool.len());
        pool.into_iter().nth(i)
    }

    async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        let tick = (self.config.ping_every / 4).clamp(Duration::from_millis(50), Duration::from_millis(250));
        let mut watchdog = tokio::time::interval(tick);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.conn.is_none()
                && let Err(e) = self.come_back().await
            {
                self.stop(format!("could not get back in: {e}"));
                return;
            }
            let Some(conn) = self.conn.as_mut() else { continue };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Close { reply }) => {
                        if let Some(mut c) = self.conn.take() {
                            let _ = c.close().await;
                        }
                        self.stop("closed by the application".into());
                        let _ = reply.send(());
                        return;
                    }
                    Some(c) => self.on_command(c).await,
                    None => {
                        if let Some(mut c) = self.conn.take() {
                            let _ = c.close().await;
                        }
                        return;
                    }
                },
                frame = conn.recv_checked() => match frame {
                    Ok((v, gap)) => self.on_frame(v, gap).await,
                    Err(Error::Closed { code, reason }) => {
                        // A policy close (bad token, abuse) or an oversized message ends the
                        // session on the server: only a fresh join gets back in.
                        if matches!(code, Some(1008) | Some(1009)) {
                            self.session = None;
                        }
                        self.lose(ReconnectReason::Closed { code, reason });
                    }
                    Err(_) => self.lose(ReconnectReason::Dropped),
                },
                _ = watchdog.tick() => self.watch().await,
            }
        }
    }

    fn stop(&mut self, reason: String) {
        if let Some(w) = self.join_wait.take() {
            let _ = w.send(Err(Error::ClientClosed));
        }
        if let Some(w) = self.leave_wait.take() {
            let _ = w.send(Err(Error::ClientClosed));
        }
        self.emit(Event::Closed { reason });
    }

    /// The connection is gone: report it once, and fail what cannot survive a reconnect.
    fn lose(&mut self, reason: ReconnectReason) {
        if self.conn.take().is_none() {
            return;
        }
        if let Some(w) = self.join_wait.take() {
            let _ = w.send(Err(Error::Closed { code: None, reason: "the connection broke during the join".into() }));
            self.room = None;
        }
        if let Some(w) = self.leave_wait.take() {
            // The server ends a session whose connection closed; nothing to resume.
            self.room = None;
            self.session = None;
            let _ = w.send(Ok(()));
        }
        self.emit(Event::Reconnecting { reason });
    }

    async fn watch(&mut self) {
        if self.last_heard.elapsed() > self.config.stale_after {
            self.lose(ReconnectReason::Stale);
        } else if self.last_sent.elapsed() > self.config.ping_every {
            self.write(json!({"type": "ping"}).to_string()).await;
        }
    }

    async fn write(&mut self, text: String) {
        self.last_sent = Instant::now();
        if let Some(c) = self.conn.as_mut()
            && c.send_text(text).await.is_err()
        {
            self.lose(ReconnectReason::Dropped);
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Join { room, options, reply } => {
                if self.room.is_some() || self.join_wait.is_some() {
                    let _ = reply.send(Err(Error::Server {
                        code: Code::AlreadyJoined,
                        message: "this client is in a room already; leave first".into(),
                        reference: None,
                    }));
                    return;
                }
                let frame = join_frame(&room, &options);
                self.room = Some((room, options));
                self.join_wait = Some(reply);
                self.write(frame).await;
            }
            Command::Send { id, mut frame, relayed, reply } => {
                frame["id"] = json!(id);
                if relayed && self.config.receipts {
                    frame["receipt"] = json!(true);
                }
                let text = frame.to_string();
                self.unacked.insert(id, Pending { text: text.clone(), relayed, reply });
                self.write(text).await;
            }
            Command::Unnumbered(frame) => self.write(frame.to_string()).await,
            Command::DropSocket { hold } => {
                self.lose(ReconnectReason::Requested);
                if !hold.is_zero() {
                    tokio::time::sleep(hold).await;
                }
            }
            Command::Leave { reply } => {
                if self.room.is_none() {
                    let _ = reply.send(Err(Error::Server {
                        code: Code::NotJoined,
                        message: "this client is not in a room".into(),
                        reference: None,
                    }));
                    return;
                }
                self.leave_wait = Some(reply);
                self.write(json!({"type": "leave"}).to_string()).await;
            }
            Command::Close { .. } => {}
        }
    }

    async fn on_frame(&mut self, v: Value, gap: Option<SeqGap>) {
        self.last_heard = Instant::now();
        self.note_seq(&v, gap);
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "ack" | "pong" => self.on_answer(&v),
            "delivered" => {
                if let Some(id) = v["ref"].as_u64()
                    && let Some(text) = self.undelivered.remove(&id)
                {
                    self.remember_recent(id, text);
                    self.emit(Event::Delivered(MessageId(id)));
                }
            }
            "offer" | "answer" | "ice-candidate" => self.on_relayed(kind, v),
            "joined" => self.on_joined(&v),
            "left" => {
                self.room = None;
                self.session = None;
                if let Some(w) = self.leave_wait.take() {
                    let _ = w.send(Ok(()));
                }
                self.emit(Event::from_frame(v));
            }
            "goaway" => {
                // The node is draining: go to another one now, while it still hands over.
                self.lose(ReconnectReason::GoAway);
            }
            "error" => self.on_error(v).await,
            _ => self.emit(Event::from_frame(v)),
        }
    }

    fn on_answer(&mut self, v: &Value) {
        let Some(id) = v["ref"].as_u64() else { return };
        // A repeated `ack` (the server sends one again for a message it had already taken)
        // finds nothing here and is ignored.
        let Some(p) = self.unacked.remove(&id) else { return };
        if p.relayed {
            if self.config.receipts {
                self.undelivered.insert(id, p.text);
                while self.undelivered.len() > MAX_UNDELIVERED {
                    self.undelivered.pop_first();
                }
            } else {
                self.remember_recent(id, p.text);
            }
        }
        if let Some(reply) = p.reply {
            let _ = reply.send(Ok(v.clone()));
        }
        self.emit(Event::Acked(MessageId(id)));
    }

    fn remember_recent(&mut self, id: u64, text: String) {
        self.recent.insert(id, text);
        while self.recent.len() > RECENTLY_DELIVERED {
            self.recent.pop_first();
        }
    }

    fn on_relayed(&mut self, kind: String, v: Value) {
        let from = v["peerId"].as_str().unwrap_or_default().to_owned();
        let msg_id = v.get("msgId").cloned().filter(|m| !m.is_null());
        if let Some(m) = &msg_id {
            let key = received_key(&from, m);
            if self.received_set.contains(&key) {
                self.emit(Event::RepeatDropped { from, msg_id: m.clone() });
                return;
            }
            self.received_set.insert(key);
            self.received.push_back((from.clone(), m.clone()));
            while self.received.len() > MAX_RECEIVED {
                if let Some((p, m)) = self.received.pop_front() {
                    self.received_set.remove(&received_key(&p, &m));
                }
            }
        }
        self.emit(Event::Relayed { kind, from, msg_id, payload: v });
    }

    fn on_joined(&mut self, v: &Value) {
        let Some(joined) = Joined::from_frame(v) else {
            self.emit(Event::Other(v.clone()));
            return;
        };
        let resume_token = v["resumeToken"].as_str().unwrap_or_default().to_owned();
        self.session = Some(Session { peer_id: joined.peer_id.clone(), resume_token });
        if let Some(w) = self.join_wait.take() {
            let _ = w.send(Ok(joined.clone()));
        }
        self.latest_joined = Some(joined.clone());
        self.emit(Event::Joined(joined));
    }

    async fn on_error(&mut self, v: Value) {
        let err = Error::from_frame(&v);
        let Error::Server { code, message, reference } = err else { return };
        // A join refused: the client is in no room.
        if self.join_wait.is_some() && self.session.is_none() && reference.is_none() {
            self.room = None;
            if let Some(w) = self.join_wait.take() {
                let _ = w.send(Err(Error::Server { code, message, reference }));
            }
            return;
        }
        match code {
            // The room is being re-homed; the edge keeps the message and sends it again.
            Code::RoomUnavailable => {}
            Code::NotJoined | Code::RoomElsewhere if self.session.is_some() => {
                // The session ended with a move: join again, on a new connection.
                self.emit(Event::Error { code, message, reference });
                self.session = None;
                self.lose(ReconnectReason::SessionLost);
                return;
            }
            _ => {
                // A request learns its refusal. A relayed message refused for good (an unknown
                // peer, a bad message) is not sent again; one refused for now (the node's
                // database is away, the rate limit) stays kept and goes again after the next
                // reconnect, as an unanswered one would.
                let for_now = matches!(code, Code::Unavailable | Code::Internal | Code::RateLimited);
                if let Some(id) = reference.as_ref().and_then(Value::as_u64)
                    && let Some(p) = self.unacked.get(&id)
                    && (p.reply.is_some() || !for_now)
                    && let Some(p) = self.unacked.remove(&id)
                    && let Some(reply) = p.reply
                {
                    let _ = reply.send(Err(Error::Server { code, message, reference }));
                    return;
                }
            }
        }
        self.emit(Event::Error { code, message, reference });
    }

    /// Gets back in: a new connection to a node (another one than before if there is a
    /// choice), `resume` if there is a session, else `join` if there is a room; then sends again
    /// what the server may not have.
    async fn come_back(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            if let Some(limit) = self.config.reconnect.give_up_after
                && started.elapsed() > limit
            {
                return Err(Error::Timeout("reconnecting"));
            }
            let delay = self.config.reconnect.delay(attempt, &mut self.rng);
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
            let Some(url) = self.pick_url() else { continue };
            self.url = Some(url.clone());
            match self.enter(&url).await {
                Ok(resumed) => {
                    self.last_heard = Instant::now();
                    self.emit(Event::Reconnected { resumed, url });
                    self.send_again(resumed).await;
                    return Ok(());
                }
                Err(_) => self.conn = None,
            }
        }
    }

    /// After a resume: the recently confirmed relayed messages and the unconfirmed ones, then
    /// everything not acknowledged, in order. After a fresh join only what was not
    /// acknowledged (relayed messages addressed the old session's peers and were dropped).
    async fn send_again(&mut self, resumed: bool) {
        let mut again: Vec<String> = Vec::new();
        if resumed {
            let mut both = self.recent.clone();
            both.extend(self.undelivered.iter().map(|(id, t)| (*id, t.clone())));
            again.extend(both.into_values());
        }
        again.extend(self.unacked.values().map(|p| p.text.clone()));
        for text in again {
            self.write(text).await;
        }
    }

    /// Opens `url` and takes the session back (true), or joins afresh or just checks the
    /// token (false).
    async fn enter(&mut self, url: &str) -> Result<bool> {
        let token = match &self.config.token {
            TokenSource::Static(t) => t.clone(),
            TokenSource::Fetch(f) => f(url).await.map_err(Error::Config)?,
        };
        let conn = tokio::time::timeout(self.config.connect_timeout, self.open(url, &token))
            .await
            .map_err(|_| Error::Timeout("connecting"))??;
        self.conn = Some(conn);
        self.url = Some(url.to_owned());
        if let Ok(mut shared) = self.shared_url.lock() {
            *shared = Some(url.to_owned());
        }
        self.last_sent = Instant::now();
        if let Some(session) = &self.session {
            let received: Vec<Value> = self.received.iter().map(|(p, m)| json!({"peerId": p, "msgId": m})).collect();
            let resume = json!({
                "type": "resume",
                "sessionId": session.peer_id,
                "resumeToken": session.resume_token,
                "lastSeq": self.last_seq,
                "received": received,
            });
            self.send_raw(resume).await?;
            let first = self.first_frame().await?;
            match first["type"].as_str() {
                // `resumed` carries the client's `lastSeq`; the replay follows it.
                Some("resumed") => {
                    self.last_seq = first["seq"].as_u64().unwrap_or(self.last_seq);
                    return Ok(true);
                }
                Some("resume_failed") => {
                    let reason = first["reason"].as_str().unwrap_or_default().to_owned();
                    self.emit(Event::ResumeFailed { reason: reason.clone() });
                    if reason == "unavailable" {
                        // The session is still held; its room is not reachable yet.
                        return Err(Error::ResumeFailed(reason));
                    }
                    self.forget_session();
                }
                Some("error") => return Err(Error::from_frame(&first)),
                _ => return Err(Error::Protocol(format!("unexpected answer to resume: {first}"))),
            }
        }
        if let Some((room, options)) = self.room.clone() {
            self.send_raw_text(join_frame(&room, &options)).await?;
            let first = self.first_frame().await?;
            match first["type"].as_str() {
                Some("joined") => {
                    self.last_seq = first["seq"].as_u64().unwrap_or(0);
                    self.on_joined(&first);
                    Ok(false)
                }
                Some("error") => Err(Error::from_frame(&first)),
                _ => Err(Error::Protocol(format!("unexpected answer to join: {first}"))),
            }
        } else {
            // Not in a room: a ping proves the token was taken (a refused one gets its error).
            self.send_raw(json!({"type": "ping", "id": "connect"})).await?;
            let first = self.first_frame().await?;
            match first["type"].as_str() {
                Some("pong") => Ok(false),
                Some("error") => Err(Error::from_frame(&first)),
                _ => Err(Error::Protocol(format!("unexpected answer to ping: {first}"))),
            }
        }
    }

    /// The session is gone for good: its relayed messages addressed peers of that session.
    fn forget_session(&mut self) {
        self.session = None;
        self.unacked.retain(|_, p| !p.relayed);
        self.undelivered.clear();
        self.recent.clear();
        self.received.clear();
        self.received_set.clear();
    }

    async fn open(&self, url: &str, token: &str) -> Result<RawConnection> {
        #[cfg(feature = "rustls")]
        if url.starts_with("wss:")
            && let Some(tls) = &self.config.tls
        {
            return RawConnection::connect_tls(url, Some(token), tls.clone()).await;
        }
        if url.starts_with("wss:") {
            // The crate brings no roots of its own: whom to trust is the caller's to say.
            return Err(Error::Config("a wss:// URL needs ClientConfig::tls (feature rustls)".into()));
        }
        RawConnection::connect(url, Some(token)).await
    }

    async fn send_raw(&mut self, v: Value) -> Result<()> {
        self.send_raw_text(v.to_string()).await
    }

    async fn send_raw_text(&mut self, text: String) -> Result<()> {
        self.last_sent = Instant::now();
        match self.conn.as_mut() {
            Some(c) => c.send_text(text).await,
            None => Err(Error::Closed { code: None, reason: "no connection".into() }),
        }
    }

    /// The first frame on a new connection (within the answer timeout).
    async fn first_frame(&mut self) -> Result<Value> {
        let timeout = self.config.answer_timeout;
        let conn = self.conn.as_mut().ok_or(Error::Closed { code: None, reason: "no connection".into() })?;
        let (v, gap) =
            tokio::time::timeout(timeout, conn.recv_checked()).await.map_err(|_| Error::Timeout("answer"))??;
        // The session's numbering is not this frame's to move: a `resume_failed` or an
        // `error` on a new connection is numbered by that connection, and the next resume
        // must still name where the session stands. `enter` moves it once the answer is known.
        if let Some(g) = gap {
            self.emit(Event::SeqGap { expected: g.expected, got: g.got, frame: v.clone() });
        }
        self.last_heard = Instant::now();
        Ok(v)
    }

    fn note_seq(&mut self, v: &Value, gap: Option<SeqGap>) {
        if let Some(g) = gap {
            self.emit(Event::SeqGap { expected: g.expected, got: g.got, frame: v.clone() });
        }
        if let Some(seq) = v["seq"].as_u64() {
            self.last_seq = seq;
        }
    }
}

fn join_frame(room: &str, options: &JoinOptions) -> String {
    let mut frame = json!({"type": "join", "roomId": room});
    if let Some(name) = &options.display_name {
        frame["displayName"] = json!(name);
    }
    frame.to_string()
}
