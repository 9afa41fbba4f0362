//! Where a link's reader hands room commands: to the room's instance on this node, found once
//! and kept, without ever making the reader wait.
//!
//! A command for a room found before goes straight to it (through its relay table when it
//! can). A room not found yet, or whose instance stopped, is looked up (and started, when this
//! node should own it) by an opener task of its own; the commands for that room that arrive
//! meanwhile queue behind the opener, in order, while the reader goes on with every other
//! record on the link: frames for this node's connections and commands for other rooms are not
//! held up by a room start that waits for the database (a node woken from a freeze gets
//! commands for many rooms it no longer owns, and each start refused costs a round trip).
//!
//! Order: a room's commands from one link reach the room in the order they were read. The
//! reader sends straight to a room only once its opener has handed over everything queued.
//! A room that could not be found here (its owner is elsewhere, or this node drains) has its
//! queued commands bounced back to their senders' nodes, which find the room again; the next
//! command for it starts another opener.

use crate::routing::{RoomCmd, RoomHostArgs, bounce, find_local_room};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use switchboard_actors::ids::{ConnId, RoomId};
use switchboard_actors::room::RoomMsg;
use switchboard_actors::room::local::LocalRoom;
use tokio::sync::mpsc;

/// Commands that may queue for one room while it is being found; past this they are dropped
/// (and counted): their senders keep what matters and send it again.
pub const MAX_QUEUED: usize = 65_536;

/// What the door knows of one room.
enum Entry {
    /// Found: commands go straight to it.
    Open(LocalRoom),
    /// Being found by an opener task; commands queue behind it.
    Opening(Opening),
}

/// A room's opener, as the reader sees it.
struct Opening {
    queue: mpsc::UnboundedSender<(ConnId, RoomMsg)>,
    /// Commands queued and not yet handed over by the opener.
    queued: Arc<AtomicUsize>,
    /// What the opener found, once it has: the room, or the hint it was refused with.
    outcome: Arc<Mutex<Option<Result<LocalRoom, String>>>>,
}

/// The rooms one link's reader has reached lately. One per link, owned by its reader.
pub struct RoomDoor {
    args: Arc<RoomHostArgs>,
    rooms: HashMap<RoomId, Entry>,
    inserted: u64,
}

impl RoomDoor {
    /// A door with no room found yet.
    pub fn new(args: Arc<RoomHostArgs>) -> RoomDoor {
        RoomDoor { args, rooms: HashMap::new(), inserted: 0 }
    }

    /// Hands a command to the local room: an offer, answer or candidate through the room's
    /// relay table, the rest to the Room actor. Never waits: a room not found yet is found by
    /// its opener, and the command waits in its queue.
    pub fn deliver(&mut self, room: RoomId, conn: ConnId, mut msg: RoomMsg) {
        // The hot path: a room found before, still running (one lookup).
        if let Some(Entry::Open(local)) = self.rooms.get(&room)
            && local.running()
        {
            msg = match hand_to(local, msg) {
                None => return,
                Some(msg) => msg,
            };
        }
        // An opener that has handed everything over makes way for the room it found (or for a
        // new opener): go again.
        if matches!(self.rooms.get(&room), Some(Entry::Opening(_))) && self.settled(&room).is_some() {
            return self.deliver(room, conn, msg);
        }
        // Being found: the command queues behind its opener.
        let (conn, msg) = match self.rooms.get(&room) {
            Some(Entry::Opening(opening)) => {
                if opening.queued.load(Ordering::Acquire) >= MAX_QUEUED {
                    metrics::counter!("switchboard_cluster_room_queue_dropped_total").increment(1);
                    return;
                }
                opening.queued.fetch_add(1, Ordering::AcqRel);
                match opening.queue.send((conn, msg)) {
                    Ok(()) => return,
                    // The opener is gone (it cannot be while its sender lives): open again.
                    Err(mpsc::error::SendError(returned)) => {
                        opening.queued.fetch_sub(1, Ordering::AcqRel);
                        returned
                    }
                }
            }
            _ => (conn, msg),
        };
        // Not found yet, stopped, or not to be had here last time: an opener finds it.
        let opening = open(self.args.clone(), room.clone());
        opening.queued.fetch_add(1, Ordering::AcqRel);
        let _ = opening.queue.send((conn, msg));
        self.rooms.insert(room, Entry::Opening(opening));
        self.inserted += 1;
        if self.inserted.is_multiple_of(1024) {
            // Openers that finished hand over (and end); stopped instances are forgotten.
            let opening: Vec<RoomId> =
                self.rooms.iter().filter(|(_, e)| matches!(e, Entry::Opening(_))).map(|(r, _)| r.clone()).collect();
            for room in opening {
                self.settled(&room);
            }
            self.rooms.retain(|_, e| match e {
                Entry::Open(local) => local.running(),
                Entry::Opening(_) => true,
            });
        }
    }

    /// If `room`'s opener has finished and handed over everything queued, the entry becomes
    /// the room it found (or goes, when it found none). `None` while commands must still queue.
    fn settled(&mut self, room: &RoomId) -> Option<()> {
        let Some(Entry::Opening(opening)) = self.rooms.get(room) else { return Some(()) };
        if opening.queued.load(Ordering::Acquire) != 0 {
            return None;
        }
        let outcome = opening.outcome.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        match outcome {
            Ok(local) => self.rooms.insert(room.clone(), Entry::Open(local)),
            Err(_) => self.rooms.remove(room),
        };
        Some(())
    }
}

/// Gives `msg` to a running instance; the message back when the instance turned out to be
/// stopped.
fn hand_to(local: &LocalRoom, msg: RoomMsg) -> Option<RoomMsg> {
    if local.relay(&msg) {
        return None;
    }
    match local.cast(msg).map_err(|e| *e) {
        Ok(()) => None,
        Err(ractor::MessagingErr::SendErr(msg)) => Some(msg),
        Err(_) => None,
    }
}

/// Starts the opener of `room`: it finds (or starts) the room, then hands over, in order, what
/// queued meanwhile and what still comes until the reader takes over, bouncing it all if the
/// room is not to be had here.
fn open(args: Arc<RoomHostArgs>, room: RoomId) -> Opening {
    let (queue, mut rx) = mpsc::unbounded_channel::<(ConnId, RoomMsg)>();
    let queued = Arc::new(AtomicUsize::new(0));
    let outcome = Arc::new(Mutex::new(None));
    let opening = Opening { queue, queued: queued.clone(), outcome: outcome.clone() };
    tokio::spawn(async move {
        let found = find_local_room(&args, &room).await.map_err(Option::unwrap_or_default);
        // Whatever is queued now, and whatever the reader queues until it sees the outcome
        // with nothing left queued, goes in order; then the reader sends straight.
        *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(found.clone());
        while let Some((conn, msg)) = rx.recv().await {
            match &found {
                Ok(local) => {
                    if let Some(msg) = hand_to(local, msg)
                        && let Some(cmd) = RoomCmd::from_room_msg(&msg)
                    {
                        // Stopped under its queue: the senders find it again.
                        bounce(&args, room.clone(), conn, cmd, String::new());
                    }
                }
                Err(hint) => {
                    if let Some(cmd) = RoomCmd::from_room_msg(&msg) {
                        bounce(&args, room.clone(), conn, cmd, hint.clone());
                    }
                }
            }
            queued.fetch_sub(1, Ordering::AcqRel);
        }
    });
    opening
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Links;
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    use switchboard_actors::ids::PeerId;
    use switchboard_actors::ports::{Edge, Frame};
    use switchboard_actors::room::relay_table::RelayTable;
    use switchboard_actors::room_supervisor::RoomSupervisorMsg;
    use tokio::sync::{Notify, mpsc::UnboundedSender};

    struct NoEdge;
    impl Edge for NoEdge {
        fn deliver(&self, _: &ConnId, _: Frame) -> bool {
            true
        }
        fn is_connected(&self, _: &ConnId) -> bool {
            true
        }
        fn reattach(&self, _: &ConnId, _: &RoomId, _: i64) {}
        fn receipt(&self, _: &ConnId, _: &str) {}
    }

    /// A room that reports every `SeqShift` it gets as (room, number).
    struct FakeRoom;
    impl Actor for FakeRoom {
        type Msg = RoomMsg;
        type State = (RoomId, UnboundedSender<(String, i64)>);
        type Arguments = (RoomId, UnboundedSender<(String, i64)>);
        async fn pre_start(
            &self,
            _: ActorRef<RoomMsg>,
            args: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(args)
        }
        async fn handle(
            &self,
            _: ActorRef<RoomMsg>,
            msg: RoomMsg,
            state: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                RoomMsg::Table(reply) => {
                    let _ = reply.send(Arc::new(RelayTable::new(state.0.clone(), Arc::new(NoEdge))));
                }
                RoomMsg::SeqShift { seq_offset, .. } => {
                    let _ = state.1.send((state.0.to_string(), seq_offset));
                }
                _ => {}
            }
            Ok(())
        }
    }

    /// A supervisor that runs rooms `fast` and `slow`; `slow` is found only once `release`
    /// is notified.
    struct FakeSupervisor;
    impl Actor for FakeSupervisor {
        type Msg = RoomSupervisorMsg;
        type State = (UnboundedSender<(String, i64)>, Arc<Notify>);
        type Arguments = (UnboundedSender<(String, i64)>, Arc<Notify>);
        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            args: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(args)
        }
        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            msg: Self::Msg,
            state: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                RoomSupervisorMsg::Lookup { reply, .. } => {
                    let _ = reply.send(None);
                }
                RoomSupervisorMsg::Resolve { room, reply } => {
                    let (seen, release) = (state.0.clone(), state.1.clone());
                    tokio::spawn(async move {
                        if room.as_str() == "slow" {
                            release.notified().await;
                        }
                        let (actor, _) = Actor::spawn(None, FakeRoom, (room, seen)).await.expect("room");
                        let _ = reply.send(Ok(actor));
                    });
                }
                _ => {}
            }
            Ok(())
        }
    }

    async fn next(seen: &mut mpsc::UnboundedReceiver<(String, i64)>) -> (String, i64) {
        tokio::time::timeout(Duration::from_secs(10), seen.recv()).await.expect("in time").expect("open")
    }

    fn shift(n: i64) -> RoomMsg {
        RoomMsg::SeqShift { peer: PeerId::new("p"), conn: ConnId::new("n2/c"), seq_offset: n }
    }

    #[tokio::test]
    async fn a_room_being_found_holds_up_neither_other_rooms_nor_its_own_order() {
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let (supervisor, _) = Actor::spawn(None, FakeSupervisor, (seen_tx, release.clone())).await.expect("supervisor");
        let args = Arc::new(RoomHostArgs {
            node_id: "n1".into(),
            rooms: supervisor,
            edge: Arc::new(NoEdge),
            draining: Arc::new(AtomicBool::new(false)),
            successor: Arc::new(|_: &str| None),
            links: Links::detached("n1"),
        });
        let mut door = RoomDoor::new(args);
        let (slow, fast) = (RoomId::new("slow"), RoomId::new("fast"));
        let conn = ConnId::new("n2/c");
        // The slow room's start does not hold up the fast room's commands.
        for n in 0..3 {
            door.deliver(slow.clone(), conn.clone(), shift(n));
        }
        door.deliver(fast.clone(), conn.clone(), shift(100));
        assert_eq!(next(&mut seen).await, ("fast".to_owned(), 100));
        // What queued for the slow room arrives in order once it is found, then what follows.
        release.notify_one();
        for n in 3..6 {
            door.deliver(slow.clone(), conn.clone(), shift(n));
        }
        for n in 0..6 {
            assert_eq!(next(&mut seen).await, ("slow".to_owned(), n));
        }
        // Later commands go straight to the room found, still in order.
        for n in 6..50 {
            door.deliver(slow.clone(), conn.clone(), shift(n));
        }
        for n in 6..50 {
            assert_eq!(next(&mut seen).await, ("slow".to_owned(), n));
        }
        // ...and once its opener has handed everything over, the reader sends straight (the
        // opener counts a command handed over just after the room got it: polled, bounded).
        for _ in 0..500 {
            if door.settled(&slow).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(matches!(door.rooms.get(&slow), Some(Entry::Open(_))), "the reader sends straight");
    }
}
