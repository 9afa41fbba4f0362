//! The two ports through which actors reach the outside: persistence and delivery.

use crate::call_status::{CallStatus, CallTransition};
use crate::ids::{ConnId, PeerId, RoomId, UserId};
use crate::media::MediaState;
use crate::protocol::{ChatMessage, FrameKind};
use crate::quality::{Quality, StatsSample};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// A serialized server-to-client message on its way to a connection.
///
/// `body` is a JSON object without `seq`; the connection that writes it adds its own
/// per-session sequence number. The body is shared, so a broadcast serializes once.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The JSON object, starting with `{`.
    pub body: Arc<str>,
    /// When the relayed message entered the server, for the relay latency histogram.
    pub received_at: Option<Instant>,
    /// The session sequence number the room gave it (then `body` carries it already); `None`
    /// for frames the connection numbers itself.
    pub seq: Option<u64>,
    /// What it is, for the connection that writes it.
    pub kind: FrameKind,
    /// The ownership epoch of the room instance that numbered it; 0 when the room is not
    /// fenced (one node) or the frame is not numbered. A connection drops a numbered frame
    /// from an instance older than one it has heard from: an owner woken from a freeze may
    /// still write what it numbered before it lost the room, after the new owner has taken up
    /// the session's count.
    pub epoch: i64,
}

/// Delivery of frames to client connections, wherever they are.
pub trait Edge: Send + Sync + 'static {
    /// Queues `frame` for connection `conn`. Returns false when the connection is gone.
    fn deliver(&self, conn: &ConnId, frame: Frame) -> bool;
    /// Whether the connection is still open.
    fn is_connected(&self, conn: &ConnId) -> bool;
    /// Tells connection `conn` that `room` runs in a new instance on this node (after a
    /// restart, a move or a node's death). The connection points itself at it and answers with
    /// [`RoomMsg::SeqSync`](crate::room::RoomMsg::SeqSync), so that the new instance numbers
    /// the session's frames as the client counts them.
    /// `epoch` is the instance's ownership epoch (see [`Frame::epoch`]).
    fn reattach(&self, conn: &ConnId, room: &RoomId, epoch: i64);
    /// Tells the sender's connection `conn` that its relayed message `msg_id` (the client's
    /// `id`, as JSON text) was written to its target's socket: the sender's edge may forget it.
    fn receipt(&self, conn: &ConnId, msg_id: &str);
    /// The path frames for `conn` take now: [`LOCAL_ROUTE`] for a connection of this node,
    /// [`NO_ROUTE`] when its node cannot be reached, otherwise the identity of the link to its
    /// node. A link that closed and was set up again (a node declared down by mistake, a
    /// network blip) has a new identity: frames sent on the old one may have been lost.
    fn route(&self, _conn: &ConnId) -> u64 {
        LOCAL_ROUTE
    }
}

/// [`Edge::route`] of a connection on the room's own node: nothing between them can lose a frame.
pub const LOCAL_ROUTE: u64 = 0;

/// [`Edge::route`] of a connection whose node cannot be reached.
pub const NO_ROUTE: u64 = u64::MAX;

/// Failure of the persistence port.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached or refused the statement.
    #[error("database error: {0}")]
    Database(String),
    /// A row holds something the code cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The write carried a lease epoch that is no longer current: another node owns the room.
    #[error("fenced: the lease on room {0} is no longer held at this epoch")]
    Fenced(String),
}

/// The proof of ownership every write of a clustered room carries: the room's ownership row
/// as this node acquired it, under this node's lease term. A write whose fence is stale (a
/// newer epoch, or the node's lease at that term has run out) is refused, so a node that lost a
/// room (frozen, partitioned) can never change it again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fence {
    /// The room.
    pub room: RoomId,
    /// The owning node.
    pub node: String,
    /// The owning node's lease term when it took the room: the room is owned while that
    /// term's node lease is live.
    #[serde(default)]
    pub term: i64,
    /// Ownership epoch: rises with every new owner.
    pub epoch: i64,
}

/// Who may join a room and how many at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomPolicy {
    /// Most participants present at once.
    pub max_participants: u32,
    /// When set, only these users may join (seed 003's participant-only rule).
    pub invitees: Option<Vec<UserId>>,
}

/// A participant as the database remembers it.
#[derive(Clone, Debug)]
pub struct StoredParticipant {
    /// Session id.
    pub peer_id: PeerId,
    /// The user.
    pub user_id: UserId,
    /// Name shown to others.
    pub display_name: String,
    /// The connection that carries this session.
    pub conn_id: ConnId,
    /// Media state last recorded.
    pub media: MediaState,
    /// Join time, unix milliseconds.
    pub joined_at: i64,
    /// The session's resume secret.
    pub resume_token: String,
    /// Not shown to the others (the `hidden` grant).
    pub hidden: bool,
}

/// Everything a room needs to (re)start.
#[derive(Clone, Debug)]
pub struct StoredRoom {
    /// Admission policy.
    pub policy: RoomPolicy,
    /// Status of the current (or last) call.
    pub status: CallStatus,
    /// The current call session, when one is open.
    pub call_id: Option<String>,
    /// Participants whose session has not been closed.
    pub participants: Vec<StoredParticipant>,
    /// The most recent chat messages, oldest first.
    pub recent_chat: Vec<ChatMessage>,
    /// Sequence number the next chat message gets.
    pub next_chat_seq: i64,
}

/// A call status change to persist with the change that caused it.
#[derive(Clone, Debug)]
pub struct CallChange {
    /// The call session.
    pub call_id: String,
    /// What happens to it.
    pub transition: CallTransition,
    /// Why (for a close): `"ended_by_participant"`, `"empty"`, ...
    pub reason: Option<String>,
}

/// Persistence of room state. Each method is one transaction: the state change, the call
/// status change that came with it and their outbox events commit together or not at all.
#[async_trait::async_trait]
pub trait RoomStore: Send + Sync + 'static {
    /// Loads a room, creating it with `default_policy` if it does not exist.
    async fn load_room(
        &self,
        room: &RoomId,
        default_policy: &RoomPolicy,
        chat_history: u32,
    ) -> Result<StoredRoom, StoreError>;
    /// Records a participant joining (session row, `participant.joined` event).
    async fn record_join(
        &self,
        room: &RoomId,
        participant: &StoredParticipant,
        call: Option<&CallChange>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;
    /// Records a participant leaving (session closed, `participant.left` event).
    async fn record_leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        reason: &str,
        call: Option<&CallChange>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;
    /// Records a call status change on its own (an explicit end of call).
    async fn record_call_change(
        &self,
        room: &RoomId,
        call: &CallChange,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;
    /// Records a participant's media state.
    async fn record_media(&self, peer: &PeerId, media: &MediaState, fence: Option<&Fence>) -> Result<(), StoreError>;
    /// Appends a chat message.
    async fn append_chat(&self, message: &ChatMessage, fence: Option<&Fence>) -> Result<(), StoreError>;
    /// Records that a session now lives on another connection (after a resume).
    async fn record_reattach(&self, peer: &PeerId, conn: &ConnId, fence: Option<&Fence>) -> Result<(), StoreError>;
    /// Records a quality sample and its score (`call_stats`).
    async fn record_quality(
        &self,
        room: &RoomId,
        peer: &PeerId,
        sample: &StatsSample,
        quality: &Quality,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;
    /// Takes ownership of the room for `node` at lease `term` if nobody owns it now (no row, a
    /// released row, or one whose node lease has run out); returns the new epoch, or the
    /// current owner's node id. Written once per change of hands: an owned room costs no
    /// writes while its node's lease is renewed.
    async fn acquire_lease(&self, room: &RoomId, node: &str, term: i64) -> Result<Result<i64, String>, StoreError>;
    /// Gives ownership up (clean stop), so the next owner need not wait.
    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError>;
    /// Takes over the ownership `from` held (a hand-off: the previous owner kept it so that
    /// nobody else could start the room in between) for `node` at `term`, with the next epoch;
    /// `None` when `from` is no longer the owner (someone else took the room since).
    async fn transfer_lease(&self, from: &Fence, node: &str, term: i64) -> Result<Option<i64>, StoreError>;
}

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
