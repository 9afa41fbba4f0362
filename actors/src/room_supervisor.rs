//! Room supervisor: finds or starts the Room actor of a room on this node, and restarts
//! rooms that fail under an explicit [`RestartPolicy`] (backoff, a cap on restarts in a
//! window, then escalate: the room is given up and its clients get `room_unavailable`).
//!
//! ractor's default supervision stops the parent when a child exits; this supervisor
//! overrides it. It is the root of the actor tree of a node; nothing supervises it.
//!
//! Rooms start side by side: a start (taking the room's ownership, loading it) runs in a task
//! of its own, at most [`MAX_STARTING`] at once, while the supervisor keeps answering. Whoever
//! asks for a room that is starting waits for that start; nobody is turned away because a
//! start is under way. When a node takes over thousands of rooms at once, this is what keeps
//! the takeover within seconds.

use crate::error::{ErrorCode, RoomError};
use crate::ids::RoomId;
use crate::restart_policy::{RestartDecision, RestartPolicy, RestartTracker};
use crate::room::{Carry, Room, RoomArgs, RoomContext, RoomElsewhere, RoomMsg, Taken};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The actor.
pub struct RoomSupervisor;

/// Start arguments.
pub struct RoomSupervisorArgs {
    /// What rooms share.
    pub ctx: Arc<RoomContext>,
    /// How failed rooms are restarted.
    pub policy: RestartPolicy,
}

/// Room starts that may run at once (each holds one database connection at a time).
pub const MAX_STARTING: usize = 8;

type ResolveReply = RpcReplyPort<Result<ActorRef<RoomMsg>, RoomError>>;

enum Slot {
    Running(ActorRef<RoomMsg>),
    /// Being started by a task of its own; these wait for it (with what each would hand the
    /// room, for an adoption that came in while it started).
    Starting(Vec<(ResolveReply, Option<Carry>)>),
    /// Failed; restarts when the backoff elapses.
    Restarting,
}

struct Entry {
    slot: Slot,
    restarts: RestartTracker,
    present: Arc<AtomicUsize>,
}

/// Supervisor state: one entry per room this node hosts.
pub struct RoomSupervisorState {
    ctx: Arc<RoomContext>,
    policy: RestartPolicy,
    rooms: HashMap<RoomId, Entry>,
    /// Bounds the starts under way.
    starts: Arc<tokio::sync::Semaphore>,
    /// Times a shutdown or hand-off waited for starts in a row.
    deferrals: u32,
    /// Rooms in [`Slot::Starting`].
    starting: usize,
    /// The room of each running instance, for supervision events (which name the actor).
    by_actor: HashMap<ractor::ActorId, RoomId>,
}

/// Counts for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoomStats {
    /// Rooms with a running actor.
    pub rooms: usize,
    /// Participants present in them.
    pub participants: usize,
}

/// Messages the supervisor handles.
pub enum RoomSupervisorMsg {
    /// The room's actor, started if needed.
    Resolve {
        /// Which room.
        room: RoomId,
        /// The answer.
        reply: RpcReplyPort<Result<ActorRef<RoomMsg>, RoomError>>,
    },
    /// The room's actor if it runs here; never starts one.
    Lookup {
        /// Which room.
        room: RoomId,
        /// The answer.
        reply: RpcReplyPort<Option<ActorRef<RoomMsg>>>,
    },
    /// Counts for metrics.
    Stats(RpcReplyPort<RoomStats>),
    /// Ids of the rooms running here.
    List(RpcReplyPort<Vec<RoomId>>),
    /// Restart a failed room (sent to itself after the backoff).
    Restart(RoomId),
    /// The node stops: shut every room down (sessions and calls closed in the store).
    Shutdown(RpcReplyPort<()>),
    /// The node drains: stop every room without closing its sessions, handing its lease
    /// back so another node can take it over; replies with the rooms handed off and what
    /// each hands to its next instance.
    Handoff(RpcReplyPort<Vec<(RoomId, Carry)>>),
    /// Start a room handed off by a draining node here, continuing from `carry`.
    Adopt {
        /// Which room.
        room: RoomId,
        /// What its previous instance handed over.
        carry: Carry,
        /// The answer.
        reply: RpcReplyPort<Result<ActorRef<RoomMsg>, RoomError>>,
    },
    /// Start a room whose ownership and state were taken for it (a batch takeover). A room
    /// that runs or starts here already keeps its instance, and `taken` is dropped.
    Take {
        /// Which room.
        room: RoomId,
        /// Its ownership and state.
        taken: Box<Taken>,
        /// The answer.
        reply: RpcReplyPort<Result<ActorRef<RoomMsg>, RoomError>>,
    },
    /// A start task finished (sent by the task).
    Started {
        /// Which room.
        room: RoomId,
        /// The room's actor, or why it did not start.
        result: Result<ActorRef<RoomMsg>, RoomError>,
    },
}

// Local only: never crosses nodes (the cluster feature turns off ractor's blanket impl).
impl ractor::Message for RoomSupervisorMsg {}

impl Actor for RoomSupervisor {
    type Msg = RoomSupervisorMsg;
    type State = RoomSupervisorState;
    type Arguments = RoomSupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RoomSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let starts = Arc::new(tokio::sync::Semaphore::new(MAX_STARTING));
        Ok(RoomSupervisorState {
            ctx: args.ctx,
            policy: args.policy,
            rooms: HashMap::new(),
            starts,
            deferrals: 0,
            starting: 0,
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RoomSupervisorMsg::Resolve { room, reply } => resolve(&myself, state, room, None, None, reply),
            RoomSupervisorMsg::Adopt { room, carry, reply } => resolve(&myself, state, room, Some(carry), None, reply),
            RoomSupervisorMsg::Take { room, taken, reply } => resolve(&myself, state, room, None, Some(taken), reply),
            RoomSupervisorMsg::Started { room, result } => started(&myself, state, room, result),
            RoomSupervisorMsg::Lookup { room, reply } => {
                let found = match state.rooms.get(&room).map(|e| &e.slot) {
                    Some(Slot::Running(r)) if is_alive(r) => Some(r.clone()),
                    _ => None,
                };
                let _ = reply.send(found);
            }
            RoomSupervisorMsg::Stats(reply) => {
                let _ = reply.send(stats(state));
            }
            RoomSupervisorMsg::List(reply) => {
                let ids =
                    state.rooms.iter().filter(|(_, e)| matches!(e.slot, Slot::Running(_))).map(|(id, _)| id.clone());
                let _ = reply.send(ids.collect());
            }
            RoomSupervisorMsg::Restart(room) => restart(&myself, state, room).await,
            // Starts under way finish first, so that the rooms they start are stopped (or
            // handed over) too: the message comes back after them (bounded).
            RoomSupervisorMsg::Shutdown(reply) if deferred(state) => {
                myself.send_after(START_WAIT, move || RoomSupervisorMsg::Shutdown(reply));
            }
            RoomSupervisorMsg::Handoff(reply) if deferred(state) => {
                myself.send_after(START_WAIT, move || RoomSupervisorMsg::Handoff(reply));
            }
            RoomSupervisorMsg::Shutdown(reply) => {
                shutdown(state).await;
                let _ = reply.send(());
            }
            RoomSupervisorMsg::Handoff(reply) => {
                let _ = reply.send(handoff(state).await);
            }
        }
        publish_count(state);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let clean = matches!(reason.as_deref(), Some("idle" | "shutdown" | "lease_lost" | "handoff"));
                if clean {
                    forget(state, &cell);
                } else {
                    on_failure(&myself, state, &cell, &format!("stopped: {reason:?}"));
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => on_failure(&myself, state, &cell, &err.to_string()),
            _ => {}
        }
        publish_count(state);
        Ok(())
    }
}

/// How long a shutdown or hand-off waits before it looks again at starts under way.
const START_WAIT: Duration = Duration::from_millis(20);

/// Whether a shutdown or hand-off should wait for starts under way (at most 5 s in all).
fn deferred(state: &mut RoomSupervisorState) -> bool {
    if state.starting > 0 && state.deferrals < 250 {
        state.deferrals += 1;
        return true;
    }
    state.deferrals = 0;
    false
}

/// Rooms this node serves (running, or failed and waiting for their restart). Not a scan: the
/// supervisor handles a message per room start, and a node may host thousands.
fn publish_count(state: &RoomSupervisorState) {
    state.ctx.live_rooms.store(state.rooms.len() - state.starting, Ordering::Relaxed);
}

fn is_alive(room: &ActorRef<RoomMsg>) -> bool {
    matches!(room.get_status(), ActorStatus::Starting | ActorStatus::Running | ActorStatus::Upgrading)
}

/// The room whose instance `cell` was, told once per instance (at its end: supervision
/// events come when an instance stops or fails), and only while the room still runs it.
fn room_of(state: &mut RoomSupervisorState, cell: &ActorCell) -> Option<RoomId> {
    let id = state.by_actor.remove(&cell.get_id())?;
    let current =
        state.rooms.get(&id).is_some_and(|e| matches!(&e.slot, Slot::Running(r) if r.get_id() == cell.get_id()));
    current.then_some(id)
}

/// Marks `actor` as the running instance of `room`.
fn running(state: &mut RoomSupervisorState, room: &RoomId, actor: ActorRef<RoomMsg>) {
    if let Some(entry) = state.rooms.get_mut(room) {
        state.by_actor.insert(actor.get_id(), room.clone());
        entry.slot = Slot::Running(actor);
    }
}

fn forget(state: &mut RoomSupervisorState, cell: &ActorCell) {
    if let Some(id) = room_of(state, cell) {
        state.rooms.remove(&id);
    }
}

async fn spawn_room(myself: &ActorRef<RoomSupervisorMsg>, args: RoomArgs) -> Result<ActorRef<RoomMsg>, RoomError> {
    let room = args.room_id.clone();
    match Actor::spawn_linked(None, Room, args, myself.get_cell()).await {
        Ok((actor, _)) => Ok(actor),
        Err(ractor::SpawnErr::StartupFailed(e)) if e.downcast_ref::<RoomElsewhere>().is_some() => {
            let holder = e.downcast_ref::<RoomElsewhere>().map(|r| r.0.clone()).unwrap_or_default();
            Err(RoomError::new(ErrorCode::RoomElsewhere, format!("the room is served by node {holder}")))
        }
        Err(e) => {
            tracing::warn!(room_id = %room, error = %e, "room did not start");
            Err(RoomError::new(ErrorCode::RoomUnavailable, "the room could not be started; try again"))
        }
    }
}

/// Answers with the room's actor: at once when it runs, after its start otherwise (started
/// here in a task of its own when nobody has started it yet).
fn resolve(
    myself: &ActorRef<RoomSupervisorMsg>,
    state: &mut RoomSupervisorState,
    room: RoomId,
    carry: Option<Carry>,
    taken: Option<Box<Taken>>,
    reply: ResolveReply,
) {
    match state.rooms.get_mut(&room).map(|e| &mut e.slot) {
        Some(Slot::Running(r)) if is_alive(r) => {
            // Started here already (a message got here before the hand-off did): it takes
            // what the previous instance handed over for the sessions it has sent nothing yet.
            if let Some(carry) = carry {
                let _ = r.cast(RoomMsg::Absorb(carry));
            }
            let _ = reply.send(Ok(r.clone()));
            return;
        }
        Some(Slot::Starting(waiting)) => {
            waiting.push((reply, carry));
            return;
        }
        Some(Slot::Restarting) => {
            let _ = reply
                .send(Err(RoomError::new(ErrorCode::RoomUnavailable, "the room is restarting; try again shortly")));
            return;
        }
        // A room that stopped (idle) and whose exit has not been processed yet is replaced.
        _ => {}
    }
    let present = Arc::new(AtomicUsize::new(0));
    let restarts = state.rooms.remove(&room).map(|e| e.restarts).unwrap_or_default();
    let entry = Entry { slot: Slot::Starting(vec![(reply, None)]), restarts, present: present.clone() };
    state.starting += 1;
    state.rooms.insert(room.clone(), entry);
    // A room taken in a batch does no database work to start: it need not wait its turn.
    let bounded = taken.is_none();
    let args = RoomArgs { room_id: room.clone(), ctx: state.ctx.clone(), present, carry, taken };
    let (supervisor, starts) = (myself.clone(), state.starts.clone());
    tokio::spawn(async move {
        let permit = if bounded { Some(starts.acquire_owned().await) } else { None };
        let result = match permit {
            Some(Err(_)) => Err(RoomError::new(ErrorCode::RoomUnavailable, "the node is stopping")),
            _ => spawn_room(&supervisor, args).await,
        };
        let _ = supervisor.cast(RoomSupervisorMsg::Started { room, result });
    });
}

/// A start finished: the room runs (or not), and everyone who waited for it hears. A hand-off
/// that came in while a plain start was under way does not share that start's failure (it
/// failed, say, because the draining owner still held the room, which the hand-off's carry
/// takes over): it starts the room again with its carry.
fn started(
    myself: &ActorRef<RoomSupervisorMsg>,
    state: &mut RoomSupervisorState,
    room: RoomId,
    result: Result<ActorRef<RoomMsg>, RoomError>,
) {
    let Some(entry) = state.rooms.get_mut(&room) else { return };
    let Slot::Starting(waiting) = &mut entry.slot else { return };
    let waiting = std::mem::take(waiting);
    state.starting -= 1;
    match &result {
        Ok(actor) => running(state, &room, actor.clone()),
        Err(_) => {
            state.rooms.remove(&room);
        }
    }
    for (reply, carry) in waiting {
        match (&result, carry) {
            (Ok(actor), Some(carry)) => {
                let _ = actor.cast(RoomMsg::Absorb(carry));
                let _ = reply.send(result.clone());
            }
            (Err(_), Some(carry)) => resolve(myself, state, room.clone(), Some(carry), None, reply),
            _ => {
                let _ = reply.send(result.clone());
            }
        }
    }
}

fn on_failure(myself: &ActorRef<RoomSupervisorMsg>, state: &mut RoomSupervisorState, cell: &ActorCell, err: &str) {
    let Some(room) = room_of(state, cell) else { return };
    metrics::counter!("switchboard_actor_restarts_total", "actor" => "room").increment(1);
    let policy = state.policy.clone();
    let Some(entry) = state.rooms.get_mut(&room) else { return };
    match entry.restarts.on_failure(&policy, Instant::now()) {
        RestartDecision::Restart(backoff) => {
            tracing::warn!(room_id = %room, error = err, backoff_ms = backoff.as_millis() as u64, "room failed; restarting");
            entry.slot = Slot::Restarting;
            let id = room.clone();
            myself.send_after(backoff, move || RoomSupervisorMsg::Restart(id));
        }
        RestartDecision::Escalate => {
            tracing::error!(room_id = %room, error = err, "room keeps failing; giving it up");
            metrics::counter!("switchboard_actor_escalations_total", "actor" => "room").increment(1);
            state.rooms.remove(&room);
        }
    }
}

async fn restart(myself: &ActorRef<RoomSupervisorMsg>, state: &mut RoomSupervisorState, room: RoomId) {
    let Some(present) = state.rooms.get(&room).map(|e| e.present.clone()) else { return };
    let args = RoomArgs { room_id: room.clone(), ctx: state.ctx.clone(), present, carry: None, taken: None };
    match spawn_room(myself, args).await {
        Ok(actor) => {
            running(state, &room, actor);
            tracing::info!(room_id = %room, "room restarted");
        }
        Err(e) if e.code == ErrorCode::RoomElsewhere => {
            tracing::info!(room_id = %room, "room moved to another node while restarting");
            state.rooms.remove(&room);
        }
        Err(_) => {
            // Starting failed (the store is down, say): count it as another failure.
            let policy = state.policy.clone();
            let Some(entry) = state.rooms.get_mut(&room) else { return };
            match entry.restarts.on_failure(&policy, Instant::now()) {
                RestartDecision::Restart(backoff) => {
                    myself.send_after(backoff.max(Duration::from_millis(50)), move || RoomSupervisorMsg::Restart(room));
                }
                RestartDecision::Escalate => {
                    tracing::error!(room_id = %room, "room cannot be restarted; giving it up");
                    state.rooms.remove(&room);
                }
            }
        }
    }
}

fn stats(state: &RoomSupervisorState) -> RoomStats {
    let mut s = RoomStats::default();
    for e in state.rooms.values() {
        if matches!(e.slot, Slot::Running(_)) {
            s.rooms += 1;
        }
        s.participants += e.present.load(Ordering::Relaxed);
    }
    s
}

async fn shutdown(state: &mut RoomSupervisorState) {
    let rooms: Vec<ActorRef<RoomMsg>> = state
        .rooms
        .values()
        .filter_map(|e| match &e.slot {
            Slot::Running(r) => Some(r.clone()),
            Slot::Starting(_) | Slot::Restarting => None,
        })
        .collect();
    for room in rooms {
        let _ = room.call(RoomMsg::Shutdown, Some(Duration::from_secs(5))).await;
    }
}

async fn handoff(state: &mut RoomSupervisorState) -> Vec<(RoomId, Carry)> {
    let running: Vec<(RoomId, ActorRef<RoomMsg>)> = state
        .rooms
        .iter()
        .filter_map(|(id, e)| match &e.slot {
            Slot::Running(r) => Some((id.clone(), r.clone())),
            Slot::Starting(_) | Slot::Restarting => None,
        })
        .collect();
    let mut handed = Vec::new();
    for (id, room) in running {
        // The room answers with what its next instance needs and stops; it releases its
        // lease as it stops (post_stop), so once it has, another node can take it at once.
        let carry = room.call(RoomMsg::HandOff, Some(Duration::from_secs(5))).await;
        let stopped = room.stop_and_wait(Some("handoff".into()), Some(Duration::from_secs(5))).await;
        match carry {
            Ok(CallResult::Success(carry)) => handed.push((id.clone(), carry)),
            _ if stopped.is_ok() => handed.push((id.clone(), Carry::default())),
            _ => {}
        }
        state.rooms.remove(&id);
    }
    handed
}
