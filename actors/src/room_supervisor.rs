//! Room supervisor: finds or starts the Room actor of a room on this node, and restarts
//! rooms that fail under an explicit [`RestartPolicy`] (backoff, a cap on restarts in a
//! window, then escalate: the room is given up and its clients get `room_unavailable`).
//!
//! ractor's default supervision stops the parent when a child exits; this supervisor
//! overrides it. It is the root of the actor tree of a node; nothing supervises it.

use crate::error::{ErrorCode, RoomError};
use crate::ids::RoomId;
use crate::restart_policy::{RestartDecision, RestartPolicy, RestartTracker};
use crate::room::{Carry, Room, RoomArgs, RoomContext, RoomElsewhere, RoomMsg};
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

enum Slot {
    Running(ActorRef<RoomMsg>),
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
        Ok(RoomSupervisorState { ctx: args.ctx, policy: args.policy, rooms: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RoomSupervisorMsg::Resolve { room, reply } => {
                let _ = reply.send(resolve(&myself, state, room, None).await);
            }
            RoomSupervisorMsg::Adopt { room, carry, reply } => {
                let _ = reply.send(resolve(&myself, state, room, Some(carry)).await);
            }
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

fn publish_count(state: &RoomSupervisorState) {
    let running = state.rooms.values().filter(|e| matches!(e.slot, Slot::Running(_))).count();
    state.ctx.live_rooms.store(running, Ordering::Relaxed);
}

fn is_alive(room: &ActorRef<RoomMsg>) -> bool {
    matches!(room.get_status(), ActorStatus::Starting | ActorStatus::Running | ActorStatus::Upgrading)
}

fn room_of(state: &RoomSupervisorState, cell: &ActorCell) -> Option<RoomId> {
    state.rooms.iter().find_map(|(id, e)| match &e.slot {
        Slot::Running(r) if r.get_id() == cell.get_id() => Some(id.clone()),
        _ => None,
    })
}

fn forget(state: &mut RoomSupervisorState, cell: &ActorCell) {
    if let Some(id) = room_of(state, cell) {
        state.rooms.remove(&id);
    }
}

async fn spawn_room(
    myself: &ActorRef<RoomSupervisorMsg>,
    state: &RoomSupervisorState,
    room: &RoomId,
    present: Arc<AtomicUsize>,
    carry: Option<Carry>,
) -> Result<ActorRef<RoomMsg>, RoomError> {
    let args = RoomArgs { room_id: room.clone(), ctx: state.ctx.clone(), present, carry };
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

async fn resolve(
    myself: &ActorRef<RoomSupervisorMsg>,
    state: &mut RoomSupervisorState,
    room: RoomId,
    carry: Option<Carry>,
) -> Result<ActorRef<RoomMsg>, RoomError> {
    match state.rooms.get(&room).map(|e| &e.slot) {
        Some(Slot::Running(r)) if is_alive(r) => {
            // Started here already (a message got here before the hand-off did): it takes
            // what the previous instance handed over for the sessions it has sent nothing yet.
            if let Some(carry) = carry {
                let _ = r.cast(RoomMsg::Absorb(carry));
            }
            return Ok(r.clone());
        }
        Some(Slot::Restarting) => {
            return Err(RoomError::new(ErrorCode::RoomUnavailable, "the room is restarting; try again shortly"));
        }
        // A room that stopped (idle) and whose exit has not been processed yet is replaced.
        _ => {}
    }
    let present = Arc::new(AtomicUsize::new(0));
    let actor = spawn_room(myself, state, &room, present.clone(), carry).await?;
    let restarts = state.rooms.remove(&room).map(|e| e.restarts).unwrap_or_default();
    state.rooms.insert(room, Entry { slot: Slot::Running(actor.clone()), restarts, present });
    Ok(actor)
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
    match spawn_room(myself, state, &room, present, None).await {
        Ok(actor) => {
            if let Some(entry) = state.rooms.get_mut(&room) {
                entry.slot = Slot::Running(actor);
            }
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
            Slot::Restarting => None,
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
            Slot::Restarting => None,
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
