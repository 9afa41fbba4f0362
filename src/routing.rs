//! Where a room lives and how a connection reaches it.
//!
//! On a single node every room is local. In a cluster the owner of a room is the node holding
//! its live lease; a room nobody holds goes to the rendezvous-hash choice over the live members
//! (a hint: the lease decides). A connection resolves its room once, at join, and keeps the
//! answer ([`RoomHandle`]); the lease table is read only then, or when the room turns out to
//! have moved.

use crate::app::App;
use futures_util::StreamExt;
use ractor::rpc::CallResult;
use ractor::{ActorRef, MessagingErr};
use std::time::Duration;
use switchboard_actors::room::admin::{AdminAction, AdminDone};
use switchboard_actors::room::{JoinRequest, RoomMsg, Taken};
use switchboard_actors::room_supervisor::RoomSupervisorMsg;
use switchboard_actors::{ConnId, ErrorCode, PeerId, RoomId};
use switchboard_cluster::routing::{
    AdminCmd, HostMsg, JoinCmd, ResumeCmd, RoomCmd, host_group, local_admin, local_resume,
};
use switchboard_cluster::wire::Bincode;

/// An error for the client: code and sentence.
pub type RouteError = (ErrorCode, String);

pub use switchboard_actors::room::local::LocalRoom;

/// Relays an offer, answer or candidate in one hop when its room is on this node: the
/// sender's task makes the room's relay decision through the room's table and hands the frame
/// to the target's connection. False when it must go to the Room actor instead.
pub fn relay_here(handle: &RoomHandle, msg: &RoomMsg) -> bool {
    match handle {
        RoomHandle::Local(local) => local.relay(msg),
        RoomHandle::Remote(_) => false,
    }
}

/// How a connection reaches its room.
pub enum RoomHandle {
    /// The room's instance on this node.
    Local(LocalRoom),
    /// The room lives on another node.
    Remote(RemoteRoom),
}

impl RoomHandle {
    /// The handle of a room on `node`.
    pub fn remote(app: &App, node: impl Into<String>) -> RoomHandle {
        RoomHandle::Remote(RemoteRoom::new(app, node.into()))
    }
}

/// A room on another node: the node, and the links that reach it.
pub struct RemoteRoom {
    /// The owner's node id.
    pub node: String,
    links: switchboard_cluster::Links,
}

impl RemoteRoom {
    fn new(app: &App, node: String) -> RemoteRoom {
        RemoteRoom { node, links: app.links.clone() }
    }

    /// Whether the owner can be reached now.
    fn reachable(&self) -> bool {
        self.links.reachable(&self.node)
    }
}

fn unavailable() -> RouteError {
    (ErrorCode::RoomUnavailable, "the room is not reachable; try again".to_owned())
}

/// The node that should serve `room`: the live lease holder, else the placement hint (never
/// this node while it drains).
async fn owner_of(app: &App, room: &RoomId) -> String {
    let me = &app.config.node_id;
    if app.cluster.is_none() {
        return me.clone();
    }
    match app.store.lease_holder(room.as_str()).await {
        Ok(Some(holder)) => not_while_draining(app, room, holder),
        _ => crate::placement::choose(app, room.as_str()),
    }
}

/// Starts here the orphaned rooms (open sessions, no live owner) that placement gives to this
/// node, sixteen at a time. Nodes that see different loads may each think the other should
/// take a room: a room still orphaned after a few sweeps is taken by either of its two
/// candidates (the ownership row lets only one win). `sightings` counts, across sweeps, how
/// often each was seen orphaned. Returns how many were started.
pub async fn adopt_orphans(app: &App, sightings: &mut std::collections::HashMap<String, u32>) -> usize {
    const PATIENCE: u32 = 3;
    const MOST: usize = 20_000;
    let nodes = crate::placement::candidates(app);
    let me = app.config.node_id.as_str();
    let mut mine = Vec::new();
    let mut seen_now = std::collections::HashSet::new();
    let mut after = String::new();
    while seen_now.len() < MOST {
        // Large pages: each page's query reads the open sessions after `after` again.
        let rooms = match app.store.orphaned_rooms(&after, 5_000).await {
            Ok(rooms) if !rooms.is_empty() => rooms,
            _ => break,
        };
        after = rooms.last().cloned().unwrap_or_default();
        for room in rooms {
            let seen = sightings.entry(room.clone()).or_default();
            *seen += 1;
            let patient = *seen > PATIENCE && crate::placement::is_candidate_among(&nodes, &room, me);
            if patient || crate::placement::choose_among(&nodes, &room).is_none_or(|n| n == me) {
                mine.push(room.clone());
            }
            seen_now.insert(room);
        }
    }
    sightings.retain(|room, _| seen_now.contains(room));
    let adopted = take_over(app, mine).await;
    for room in &adopted {
        sightings.remove(room);
        tracing::debug!(room_id = %room, "took over an orphaned room");
    }
    if !adopted.is_empty() {
        metrics::counter!("switchboard_orphan_rooms_adopted_total").increment(adopted.len() as u64);
        tracing::info!(rooms = adopted.len(), "took over orphaned rooms");
    }
    adopted.len()
}

/// Takes the orphaned `rooms` chosen for this node in a batch (their ownership in one
/// statement per few hundred, their state in four queries per few hundred) and starts each
/// from what was read; returns the rooms that serve here now. A room someone took meanwhile is
/// left to them; one taken but not read starts the usual way.
async fn take_over(app: &App, rooms: Vec<String>) -> Vec<String> {
    let Some(term) = app.node_lease.current() else { return Vec::new() };
    if rooms.is_empty() {
        return Vec::new();
    }
    let taken = match app.store.take_rooms(&rooms, &app.config.node_id, term).await {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(error = %e, rooms = rooms.len(), "orphaned rooms not taken");
            return Vec::new();
        }
    };
    let ids: Vec<String> = taken.iter().map(|(room, _)| room.clone()).collect();
    let mut loaded = app.store.load_rooms(&ids, app.config.rooms.chat_history).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, rooms = ids.len(), "taken rooms not read in a batch; each reads its own");
        Default::default()
    });
    let starts = taken.into_iter().map(|(room, epoch)| {
        let stored = loaded.remove(&room);
        async move {
            let id = RoomId::new(&room);
            let started = match stored {
                Some(stored) => {
                    let taken = Box::new(Taken { term, epoch, stored });
                    let asked = app
                        .rooms
                        .call(|reply| RoomSupervisorMsg::Take { room: id, taken, reply }, Some(Duration::from_secs(10)))
                        .await;
                    matches!(asked, Ok(CallResult::Success(Ok(_))))
                }
                None => resolve(app, &id).await.is_ok(),
            };
            started.then_some(room)
        }
    });
    futures_util::stream::iter(starts).buffer_unordered(256).filter_map(std::future::ready).collect().await
}

/// A single node that starts again after a crash: the rooms that still have open sessions
/// start here at once, each taking its sessions back as disconnected, so their clients can
/// resume within the grace period and those who do not come back leave when it runs out (and
/// the call ends as it should). Rooms start 32 at a time (each reads its own state). Returns
/// how many rooms were started.
pub async fn restore_rooms(app: &App) -> usize {
    let mut restored = 0;
    let mut after = String::new();
    loop {
        let rooms = match app.store.orphaned_rooms(&after, 500).await {
            Ok(rooms) if !rooms.is_empty() => rooms,
            Ok(_) => return restored,
            Err(e) => {
                tracing::warn!(error = %e, "rooms of the last run not restored");
                return restored;
            }
        };
        after = rooms.last().cloned().unwrap_or_default();
        let starts = rooms.into_iter().map(|room| async move { resolve(app, &RoomId::new(&room)).await.is_ok() });
        restored +=
            futures_util::stream::iter(starts).buffer_unordered(32).filter(|ok| std::future::ready(*ok)).count().await;
    }
}

/// Joins `room`, wherever it lives.
pub async fn join(app: &App, room: &RoomId, request: JoinRequest) -> Result<(PeerId, RoomHandle), RouteError> {
    if app.cluster.is_none() {
        return local_join(app, room, request).await.map(|(peer, actor)| (peer, RoomHandle::Local(actor)));
    }
    let me = app.config.node_id.clone();
    let mut target = owner_of(app, room).await;
    let mut last = unavailable();
    // A lease can change hands between the lookup and the join: follow it a few hops.
    for _ in 0..3 {
        let outcome = if target == me {
            local_join(app, room, clone_request(&request)).await.map(|(peer, actor)| (peer, RoomHandle::Local(actor)))
        } else {
            remote_join(room, &target, &request).await.map(|peer| (peer, RoomHandle::remote(app, target.clone())))
        };
        match outcome {
            Err((ErrorCode::RoomElsewhere, message)) => {
                metrics::counter!("switchboard_routing_misses_total").increment(1);
                last = (ErrorCode::RoomElsewhere, message);
                match app.store.lease_holder(room.as_str()).await {
                    Ok(Some(holder)) if holder != target => target = holder,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            other => return other,
        }
    }
    Err(last)
}

fn clone_request(r: &JoinRequest) -> JoinRequest {
    JoinRequest {
        conn: r.conn.clone(),
        user: r.user.clone(),
        display_name: r.display_name.clone(),
        ice_servers: r.ice_servers.clone(),
        admin: r.admin,
        first_seq: r.first_seq,
        hidden: r.hidden,
    }
}

async fn remote_join(room: &RoomId, node: &str, r: &JoinRequest) -> Result<PeerId, RouteError> {
    let Some(cell) = ractor::pg::get_members(&host_group(node)).into_iter().next() else {
        return Err((
            ErrorCode::RoomUnavailable,
            format!("the node serving the room ({node}) is unreachable; try again"),
        ));
    };
    let host: ActorRef<HostMsg> = cell.into();
    let cmd = JoinCmd {
        room: room.to_string(),
        conn: r.conn.to_string(),
        user: r.user.to_string(),
        display_name: r.display_name.clone(),
        ice_servers: r.ice_servers.to_string(),
        admin: r.admin,
        first_seq: r.first_seq,
        hidden: r.hidden,
    };
    metrics::counter!("switchboard_cross_node_messages_total").increment(1);
    match host.call(|reply| HostMsg::Join(Bincode(cmd), reply), Some(Duration::from_secs(10))).await {
        Ok(CallResult::Success(Bincode(Ok(peer)))) => Ok(PeerId::new(peer)),
        Ok(CallResult::Success(Bincode(Err((code, message))))) => Err((code_from(&code), message)),
        _ => Err(unavailable()),
    }
}

fn code_from(code: &str) -> ErrorCode {
    [
        ErrorCode::RoomFull,
        ErrorCode::RoomForbidden,
        ErrorCode::RoomElsewhere,
        ErrorCode::RoomUnavailable,
        ErrorCode::Internal,
        ErrorCode::InvalidMessage,
        ErrorCode::PeerNotFound,
        ErrorCode::Unavailable,
    ]
    .into_iter()
    .find(|c| c.as_str() == code)
    .unwrap_or(ErrorCode::RoomUnavailable)
}

/// Resolves the room on this node (starting it if needed) and joins it.
async fn local_join(app: &App, room: &RoomId, request: JoinRequest) -> Result<(PeerId, LocalRoom), RouteError> {
    // A room that stops (idle) between resolve and join drops the request; resolve again.
    let mut last = unavailable();
    let mut request = Some(request);
    for _ in 0..3 {
        let local = match resolve(app, room).await {
            Ok(local) => local,
            Err(e) => {
                if e.0 == ErrorCode::RoomElsewhere {
                    return Err(e);
                }
                last = e;
                continue;
            }
        };
        let Some(req) = request.take() else { break };
        let kept = clone_request(&req);
        match local.actor.call(|reply| RoomMsg::Join { request: req, reply }, Some(Duration::from_secs(10))).await {
            Ok(CallResult::Success(Ok(peer))) => return Ok((peer, local)),
            Ok(CallResult::Success(Err(e))) => return Err((e.code, e.message)),
            // The room stopped before it answered: the join did not happen; try again.
            Ok(CallResult::SenderError) | Err(_) => request = Some(kept),
            // The room is slow: the join may still happen, so it is not retried.
            Ok(CallResult::Timeout) => break,
        }
    }
    Err(last)
}

/// Starts `room` on this node (or finds it running here), as a join or the orphan sweep would:
/// in a cluster it takes the room's ownership first.
pub async fn host_here(app: &App, room: &RoomId) -> Result<(), RouteError> {
    resolve(app, room).await.map(|_| ())
}

/// The room's actor on this node, started if needed.
async fn resolve(app: &App, room: &RoomId) -> Result<LocalRoom, RouteError> {
    let asked = app
        .rooms
        .call(|reply| RoomSupervisorMsg::Resolve { room: room.clone(), reply }, Some(Duration::from_secs(10)))
        .await;
    let actor = match asked {
        Ok(CallResult::Success(Ok(room))) => room,
        Ok(CallResult::Success(Err(e))) => return Err((e.code, e.message)),
        _ => return Err(unavailable()),
    };
    // Asked once per instance (at join, or when the room is found again), never per message.
    match actor.call(RoomMsg::Table, Some(Duration::from_secs(10))).await {
        Ok(CallResult::Success(table)) => Ok(LocalRoom { actor, table }),
        _ => Err(unavailable()),
    }
}

/// Sends a message to the room behind `handle`. A local room that restarted is found again;
/// one that moved to another node (this node handed it over or lost its lease) is followed
/// there: its new owner took the sessions over with it.
pub async fn send(
    app: &App,
    handle: &mut RoomHandle,
    room: &RoomId,
    conn: &ConnId,
    msg: RoomMsg,
) -> Result<(), RouteError> {
    match handle {
        RoomHandle::Local(local) => {
            let msg = match local.cast(msg).map_err(|e| *e) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(msg)) => msg,
                Err(_) => return Err(unavailable()),
            };
            if app.cluster.is_some() {
                let owner = owner_of(app, room).await;
                if owner != app.config.node_id {
                    let remote = RemoteRoom::new(app, owner);
                    send_remote(&remote, room, conn, &msg)?;
                    *handle = RoomHandle::Remote(remote);
                    return Ok(());
                }
            }
            let again = resolve(app, room).await?;
            let _ = again.cast(msg);
            *handle = RoomHandle::Local(again);
            Ok(())
        }
        RoomHandle::Remote(remote) if remote.reachable() => send_remote(remote, room, conn, &msg),
        // The owner is gone: find where the room is (or should be) now.
        RoomHandle::Remote(_) => reroute(app, handle, room, conn, "", msg).await,
    }
}

fn send_remote(remote: &RemoteRoom, room: &RoomId, conn: &ConnId, msg: &RoomMsg) -> Result<(), RouteError> {
    if !matches!(msg, RoomMsg::Relay { .. }) && RoomCmd::from_room_msg(msg).is_none() {
        // Never crosses nodes.
        return Ok(());
    }
    if remote.links.to_room(&remote.node, room, conn, msg) {
        crate::telemetry::hot().cross_node_messages.increment(1);
        return Ok(());
    }
    Err((ErrorCode::RoomUnavailable, format!("the node serving the room ({}) is unreachable; try again", remote.node)))
}

/// The handle of a room known to live on `node`.
pub async fn handle_for(app: &App, room: &RoomId, node: &str) -> RoomHandle {
    if node == app.config.node_id
        && let Ok(local) = resolve(app, room).await
    {
        return RoomHandle::Local(local);
    }
    RoomHandle::remote(app, node)
}

/// Finds the room again (the live lease, else `hint`, else placement) and sends `msg` there:
/// the path of a command whose room moved (drain, owner death).
pub async fn reroute(
    app: &App,
    handle: &mut RoomHandle,
    room: &RoomId,
    conn: &ConnId,
    hint: &str,
    msg: RoomMsg,
) -> Result<(), RouteError> {
    let me = app.config.node_id.clone();
    let target = match app.store.lease_holder(room.as_str()).await {
        Ok(Some(holder)) => not_while_draining(app, room, holder),
        _ if !hint.is_empty() => hint.to_owned(),
        _ => owner_of(app, room).await,
    };
    if target == me {
        let local = resolve(app, room).await?;
        local.cast(msg).map_err(|_| unavailable())?;
        *handle = RoomHandle::Local(local);
        return Ok(());
    }
    let remote = RemoteRoom::new(app, target);
    send_remote(&remote, room, conn, &msg)?;
    *handle = RoomHandle::Remote(remote);
    Ok(())
}

/// `holder`, unless it is this node while it drains: the lease is this node's only because it
/// is handing the room over (the successor takes the lease over), and starting the room here
/// again would take the lease back from under the hand-off. The successor, then.
fn not_while_draining(app: &App, room: &RoomId, holder: String) -> String {
    if holder == app.config.node_id && app.is_shutting_down() {
        return (app.successor)(room.as_str()).unwrap_or(holder);
    }
    holder
}

/// Resumes session `peer` of `room` on connection `conn`, wherever the room lives. `Err` holds
/// the `resume_failed` reason and sentence.
pub async fn resume(app: &App, room: &RoomId, cmd: ResumeCmd) -> Result<RoomHandle, (String, String)> {
    // While the room's old owner is dead and its lease not yet expired, the room cannot be
    // reached: keep trying for as long as that can take, then tell the client to try again.
    let patience = app.config.cluster.lease_ttl + app.config.cluster.heartbeat_timeout + Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let outcome = resume_once(app, room, cmd.clone()).await;
        match outcome {
            Err((reason, _)) if reason == "unavailable" && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

async fn resume_once(app: &App, room: &RoomId, cmd: ResumeCmd) -> Result<RoomHandle, (String, String)> {
    let owner = owner_of(app, room).await;
    if owner == app.config.node_id {
        local_resume(app.rooms.clone(), cmd, !app.is_shutting_down()).await?;
        let local = resolve(app, room).await.map_err(|(_, m)| ("unavailable".to_owned(), m))?;
        return Ok(RoomHandle::Local(local));
    }
    let Some(cell) = ractor::pg::get_members(&host_group(&owner)).into_iter().next() else {
        return Err(("unavailable".into(), format!("the node serving the room ({owner}) is unreachable; try again")));
    };
    let host: ActorRef<HostMsg> = cell.into();
    metrics::counter!("switchboard_cross_node_messages_total").increment(1);
    match host.call(|reply| HostMsg::Resume(Bincode(cmd), reply), Some(Duration::from_secs(10))).await {
        Ok(CallResult::Success(Bincode(Ok(_)))) => Ok(RoomHandle::remote(app, owner)),
        Ok(CallResult::Success(Bincode(Err(e)))) => Err(e),
        _ => Err(("unavailable".into(), "the room did not answer; try again".into())),
    }
}

/// Sends `msg` to the room instance `handle` points at and nowhere else; false when that
/// instance is gone (the message was not sent). For messages kept for re-sending: they must
/// not overtake older ones on their way to a new instance.
pub fn try_send(handle: &RoomHandle, room: &RoomId, conn: &ConnId, msg: RoomMsg) -> bool {
    match handle {
        RoomHandle::Local(local) => local.cast(msg).is_ok(),
        RoomHandle::Remote(remote) => send_remote(remote, room, conn, &msg).is_ok(),
    }
}

/// Whether the room behind `handle` can be reached right now.
pub fn reachable(handle: &RoomHandle) -> bool {
    match handle {
        RoomHandle::Local(local) => {
            matches!(local.actor.get_status(), ractor::ActorStatus::Running | ractor::ActorStatus::Starting)
        }
        RoomHandle::Remote(remote) => remote.reachable(),
    }
}

/// Points `handle` at where the room is now (the live lease holder, else the placement),
/// starting it here if this node should own it. Fails while the room cannot be reached yet
/// (its dead owner's lease has not expired).
pub async fn relocate(app: &App, handle: &mut RoomHandle, room: &RoomId) -> Result<(), RouteError> {
    let target = match app.store.lease_holder(room.as_str()).await {
        Ok(Some(holder)) => holder,
        _ => owner_of(app, room).await,
    };
    if target == app.config.node_id {
        if app.cluster.is_some() && app.is_shutting_down() {
            // A draining node starts no room; its rooms' next owner is being set up.
            return Err(unavailable());
        }
        *handle = RoomHandle::Local(resolve(app, room).await?);
        return Ok(());
    }
    let remote = RemoteRoom::new(app, target);
    if !remote.reachable() {
        return Err((
            ErrorCode::RoomUnavailable,
            format!("the room's node ({}) is unreachable; try again shortly", remote.node),
        ));
    }
    *handle = RoomHandle::Remote(remote);
    Ok(())
}

/// Asks `room`, on whichever node runs it, to carry out `action`. `Ok(None)` when it runs
/// nowhere (nobody is in it): there is nothing live to change, and the caller changes the
/// database alone.
pub async fn admin(app: &App, room: &RoomId, action: AdminAction) -> Result<Option<AdminDone>, RouteError> {
    let node = match &app.cluster {
        None => app.config.node_id.clone(),
        Some(_) => match app.store.lease_holder(room.as_str()).await {
            Ok(Some(holder)) => holder,
            Ok(None) => return Ok(None),
            Err(_) => return Err(unavailable()),
        },
    };
    let outcome = if node == app.config.node_id {
        local_admin(&app.rooms, room.clone(), action).await
    } else {
        let Some(cell) = ractor::pg::get_members(&host_group(&node)).into_iter().next() else {
            return Err((ErrorCode::RoomUnavailable, format!("the node serving the room ({node}) is unreachable")));
        };
        let host: ActorRef<HostMsg> = cell.into();
        let cmd = AdminCmd { room: room.to_string(), action };
        match host.call(|reply| HostMsg::Admin(Bincode(cmd), reply), Some(Duration::from_secs(10))).await {
            Ok(CallResult::Success(Bincode(outcome))) => outcome,
            _ => return Err(unavailable()),
        }
    };
    match outcome {
        Ok(done) => Ok(Some(done)),
        Err((code, _)) if code == "not_running" => Ok(None),
        Err((code, message)) => Err((code_from(&code), message)),
    }
}
