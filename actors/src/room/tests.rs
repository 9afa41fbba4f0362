//! The Room actor against in-memory fakes of its two ports: a store that remembers rows and an
//! edge that hands every frame to the test.

use super::relay_table::{RelayBody, RelayRequest, Relayed};
use super::*;
use crate::call_status::CallStatus;
use crate::ports::StoredRoom;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// A store that keeps rows in memory.
#[derive(Default)]
struct MemoryStore {
    participants: Mutex<HashMap<String, StoredParticipant>>,
    leaves: Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl RoomStore for MemoryStore {
    async fn load_room(&self, _: &RoomId, policy: &RoomPolicy, _: u32) -> Result<StoredRoom, StoreError> {
        let participants: Vec<StoredParticipant> = self.lock_participants().values().cloned().collect();
        let status = if participants.len() >= 2 { CallStatus::Active } else { CallStatus::NotStarted };
        Ok(StoredRoom {
            policy: policy.clone(),
            status,
            call_id: None,
            participants,
            recent_chat: Vec::new(),
            next_chat_seq: 1,
        })
    }
    async fn record_join(
        &self,
        _: &RoomId,
        p: &StoredParticipant,
        _: Option<&CallChange>,
        _: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.lock_participants().insert(p.peer_id.to_string(), p.clone());
        Ok(())
    }
    async fn record_leave(
        &self,
        _: &RoomId,
        peer: &PeerId,
        reason: &str,
        _: Option<&CallChange>,
        _: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.lock_participants().remove(peer.as_str());
        self.leaves.lock().expect("lock").push((peer.to_string(), reason.to_owned()));
        Ok(())
    }
    async fn record_call_change(&self, _: &RoomId, _: &CallChange, _: Option<&Fence>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn record_media(&self, _: &PeerId, _: &MediaState, _: Option<&Fence>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn append_chat(&self, _: &ChatMessage, _: Option<&Fence>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn record_reattach(&self, peer: &PeerId, conn: &ConnId, _: Option<&Fence>) -> Result<(), StoreError> {
        if let Some(p) = self.lock_participants().get_mut(peer.as_str()) {
            p.conn_id = conn.clone();
        }
        Ok(())
    }
    async fn record_quality(
        &self,
        _: &RoomId,
        _: &PeerId,
        _: &StatsSample,
        _: &crate::quality::Quality,
        _: Option<&Fence>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn acquire_lease(&self, _: &RoomId, _: &str, _: i64) -> Result<Result<i64, String>, StoreError> {
        Ok(Ok(1))
    }
    async fn release_lease(&self, _: &Fence) -> Result<(), StoreError> {
        Ok(())
    }
    async fn transfer_lease(&self, from: &Fence, _: &str, _: i64) -> Result<Option<i64>, StoreError> {
        Ok(Some(from.epoch + 1))
    }
}

impl MemoryStore {
    fn lock_participants(&self) -> std::sync::MutexGuard<'_, HashMap<String, StoredParticipant>> {
        self.participants.lock().expect("lock")
    }
}

/// What the fake edge saw.
#[derive(Debug)]
enum Seen {
    Frame(ConnId, Value),
    Reattach(ConnId),
    Receipt(ConnId, String),
}

/// An edge whose connections are open while the test says so, and that tells the test every
/// frame it is handed.
struct TestEdge {
    open: Mutex<HashSet<ConnId>>,
    /// The link each connection's frames take (none: this node's own).
    routes: Mutex<HashMap<ConnId, u64>>,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Edge for TestEdge {
    fn deliver(&self, conn: &ConnId, frame: Frame) -> bool {
        let v: Value = serde_json::from_str(&frame.body).expect("frames are JSON");
        assert_eq!(v["seq"].as_u64(), frame.seq, "the body carries the frame's number");
        let _ = self.seen.send(Seen::Frame(conn.clone(), v));
        self.is_connected(conn)
    }
    fn is_connected(&self, conn: &ConnId) -> bool {
        self.open.lock().expect("lock").contains(conn)
    }
    fn reattach(&self, conn: &ConnId, _: &RoomId, _: i64) {
        let _ = self.seen.send(Seen::Reattach(conn.clone()));
    }
    fn receipt(&self, conn: &ConnId, msg_id: &str) {
        let _ = self.seen.send(Seen::Receipt(conn.clone(), msg_id.to_owned()));
    }
    fn route(&self, conn: &ConnId) -> u64 {
        self.routes.lock().expect("lock").get(conn).copied().unwrap_or(crate::ports::LOCAL_ROUTE)
    }
}

struct Harness {
    ctx: Arc<RoomContext>,
    store: Arc<MemoryStore>,
    edge: Arc<TestEdge>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Events read while looking for another one, oldest first.
    backlog: std::collections::VecDeque<Seen>,
    room: ActorRef<RoomMsg>,
    room_id: RoomId,
}

fn config() -> RoomConfig {
    RoomConfig {
        default_policy: RoomPolicy { max_participants: 8, invitees: None },
        chat_history: 10,
        idle_timeout: Duration::from_secs(60),
        lease: None,
        fallback: FallbackPolicy::default(),
        resume_grace: Duration::from_secs(60),
    }
}

async fn start_room(ctx: Arc<RoomContext>, room_id: &RoomId) -> ActorRef<RoomMsg> {
    let args = RoomArgs { room_id: room_id.clone(), ctx, present: Arc::default(), carry: None, taken: None };
    Actor::spawn(None, Room, args).await.expect("room starts").0
}

impl Harness {
    async fn new(name: &str) -> Harness {
        let (tx, seen) = mpsc::unbounded_channel();
        let store = Arc::new(MemoryStore::default());
        let edge = Arc::new(TestEdge { open: Mutex::default(), routes: Mutex::default(), seen: tx });
        let ctx = Arc::new(RoomContext {
            store: store.clone(),
            edge: edge.clone(),
            config: config(),
            live_rooms: Arc::default(),
        });
        let room_id = RoomId::new(name);
        let room = start_room(ctx.clone(), &room_id).await;
        Harness { ctx, store, edge, seen, backlog: Default::default(), room, room_id }
    }

    /// Joins on a fresh open connection; returns the peer id and the connection.
    async fn join(&mut self, user: &str) -> (PeerId, ConnId) {
        let conn = ConnId::new(format!("local/{user}"));
        self.edge.open.lock().expect("lock").insert(conn.clone());
        let request = JoinRequest {
            conn: conn.clone(),
            user: UserId::new(user),
            display_name: user.to_owned(),
            ice_servers: json!([]),
            admin: false,
            first_seq: 1,
            hidden: false,
        };
        let asked = self.room.call(|reply| RoomMsg::Join { request, reply }, Some(Duration::from_secs(5))).await;
        let peer = match asked {
            Ok(ractor::rpc::CallResult::Success(Ok(peer))) => peer,
            other => panic!("join failed: {other:?}"),
        };
        (peer, conn)
    }

    /// The next event the edge saw (bounded in time).
    async fn next(&mut self) -> Seen {
        if let Some(seen) = self.backlog.pop_front() {
            return seen;
        }
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv()).await.expect("an event in time").expect("open")
    }

    /// The next frame for `conn` of type `kind`; other events stay for later (at most 20 read).
    async fn frame(&mut self, conn: &ConnId, kind: &str) -> Value {
        let is = |seen: &Seen| matches!(seen, Seen::Frame(to, v) if to == conn && v["type"] == kind);
        if let Some(i) = self.backlog.iter().position(is)
            && let Some(Seen::Frame(_, v)) = self.backlog.remove(i)
        {
            return v;
        }
        for _ in 0..20 {
            let seen = tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
                .await
                .expect("an event in time")
                .expect("open");
            match seen {
                Seen::Frame(to, v) if &to == conn && v["type"] == kind => return v,
                other => self.backlog.push_back(other),
            }
        }
        panic!("no {kind} for {conn}");
    }

    /// Forgets every event so far (they were all handed over before the call that caused them
    /// returned).
    fn forget_seen(&mut self) {
        self.backlog.clear();
        while self.seen.try_recv().is_ok() {}
    }

    async fn table(&self) -> Arc<RelayTable> {
        match self.room.call(RoomMsg::Table, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(table)) => table,
            _ => panic!("no table"),
        }
    }
}

fn relay(from: PeerId, to: PeerId, sdp: &str, id: Option<u64>) -> RoomMsg {
    RoomMsg::Relay {
        from,
        to,
        kind: RelayKind::Offer,
        payload: RelayPayload::Sdp(RawJson::string(sdp)),
        reference: id.map(|i| json!(i)),
        received_at: Instant::now(),
        again: false,
    }
}

#[tokio::test]
async fn joins_are_announced_and_numbered() {
    let mut h = Harness::new("unit-join").await;
    let (alice, a_conn) = h.join("alice").await;
    let joined = h.frame(&a_conn, "joined").await;
    assert_eq!((joined["seq"].as_u64(), joined["peers"].clone()), (Some(1), json!([])));
    let (bob, b_conn) = h.join("bob").await;
    let seen = h.frame(&a_conn, "peer_joined").await;
    assert_eq!(seen["peerId"], bob.as_str());
    assert_eq!(seen["seq"], 2, "alice's second frame");
    let joined = h.frame(&b_conn, "joined").await;
    assert_eq!(joined["peers"], json!([alice.as_str()]));
    assert_eq!(h.store.lock_participants().len(), 2, "both joins recorded");
}

#[tokio::test]
async fn relays_are_delivered_acknowledged_and_not_repeated() {
    let mut h = Harness::new("unit-relay").await;
    let (alice, a_conn) = h.join("alice").await;
    let (bob, b_conn) = h.join("bob").await;
    // Through the actor's mailbox.
    h.room.cast(relay(alice.clone(), bob.clone(), "v=0 one", Some(1))).expect("cast");
    let offer = h.frame(&b_conn, "offer").await;
    assert_eq!(
        (offer["sdp"].as_str(), offer["peerId"].as_str(), offer["msgId"].as_u64()),
        (Some("v=0 one"), Some(alice.as_str()), Some(1))
    );
    assert_eq!(h.frame(&a_conn, "ack").await["ref"], 1);
    // Through the table, as a connection of this node does: the same decision, in one step.
    let table = h.table().await;
    let req = RelayRequest {
        from: &alice,
        to: &bob,
        kind: RelayKind::Offer,
        payload: RelayBody::Sdp(&RawJson::string("v=0 two")),
        reference: Some(&json!(2)),
        received_at: Instant::now(),
        again: false,
    };
    assert_eq!(table.relay_from_edge(&req), Relayed::Done);
    let offer = h.frame(&b_conn, "offer").await;
    assert_eq!(offer["sdp"], "v=0 two");
    assert_eq!(h.frame(&a_conn, "ack").await["ref"], 2);
    // A repeat of id 1 is acknowledged again, not delivered again; then a new one goes through.
    h.room.cast(relay(alice.clone(), bob.clone(), "v=0 one", Some(1))).expect("cast");
    h.room.cast(relay(alice.clone(), bob.clone(), "v=0 three", Some(3))).expect("cast");
    assert_eq!(h.frame(&a_conn, "ack").await["ref"], 1);
    let next = h.frame(&b_conn, "offer").await;
    assert_eq!(next["sdp"], "v=0 three", "the repeat was dropped");
    // Unless the sender's edge sends it again for an overdue receipt: then the target gets it
    // (and drops it if it has it), and the sender is acknowledged again.
    let mut overdue = relay(alice.clone(), bob.clone(), "v=0 one", Some(1));
    if let RoomMsg::Relay { again, .. } = &mut overdue {
        *again = true;
    }
    h.room.cast(overdue).expect("cast");
    assert_eq!(h.frame(&a_conn, "ack").await["ref"], 3);
    assert_eq!(h.frame(&a_conn, "ack").await["ref"], 1);
    let again = h.frame(&b_conn, "offer").await;
    assert_eq!((again["sdp"].as_str(), again["msgId"].as_u64()), (Some("v=0 one"), Some(1)));
    // A target that is not in the room: an error, no ack.
    h.room.cast(relay(alice.clone(), PeerId::new("nobody"), "v=0", Some(4))).expect("cast");
    let error = h.frame(&a_conn, "error").await;
    assert_eq!((error["code"].as_str(), error["ref"].as_u64()), (Some("peer_not_found"), Some(4)));
    // A receipt from Bob's connection reaches Alice's.
    h.room.cast(RoomMsg::Receipt { sender: alice.clone(), msg_id: "3".into() }).expect("cast");
    loop {
        if let Seen::Receipt(conn, id) = h.next().await {
            assert_eq!((conn, id.as_str()), (a_conn.clone(), "3"));
            break;
        }
    }
}

#[tokio::test]
async fn frames_wait_for_a_resync_when_the_link_to_their_connection_changes() {
    let mut h = Harness::new("unit-link").await;
    let (alice, _) = h.join("alice").await;
    // Bob's connection is on another node, over link 7.
    h.edge.routes.lock().expect("lock").insert(ConnId::new("local/bob"), 7);
    let (bob, b_conn) = h.join("bob").await;
    h.room.cast(relay(alice.clone(), bob.clone(), "v=0 one", Some(1))).expect("cast");
    let first = h.frame(&b_conn, "offer").await;
    assert_eq!(first["sdp"], "v=0 one");
    let first_seq = first["seq"].as_u64().expect("numbered");
    // The link to Bob's node closed and came back: frames on the old one may be lost, so the
    // next is kept and Bob's connection is asked how far it has counted.
    h.edge.routes.lock().expect("lock").insert(b_conn.clone(), 8);
    h.forget_seen();
    h.room.cast(relay(alice.clone(), bob.clone(), "v=0 two", Some(2))).expect("cast");
    h.room.cast(relay(alice.clone(), bob.clone(), "v=0 three", Some(3))).expect("cast");
    let mut asked = false;
    for _ in 0..10 {
        match h.next().await {
            Seen::Reattach(conn) if conn == b_conn => {
                asked = true;
                break;
            }
            Seen::Frame(conn, v) if conn == b_conn => panic!("a frame on the new link before the resync: {v}"),
            _ => {}
        }
    }
    assert!(asked, "bob's connection asked for its count");
    // The client had only the first offer (the frames after it died with the old link).
    let sync = RoomMsg::SeqSync { peer: bob.clone(), conn: b_conn.clone(), last_seq: first_seq, seq_offset: 0 };
    h.room.cast(sync).expect("cast");
    let two = h.frame(&b_conn, "offer").await;
    let three = h.frame(&b_conn, "offer").await;
    assert_eq!((two["sdp"].as_str(), two["seq"].as_u64()), (Some("v=0 two"), Some(first_seq + 1)));
    assert_eq!((three["sdp"].as_str(), three["seq"].as_u64()), (Some("v=0 three"), Some(first_seq + 2)));
    // From then on frames flow on the new link at once.
    h.room.cast(relay(alice.clone(), bob.clone(), "v=0 four", Some(4))).expect("cast");
    assert_eq!(h.frame(&b_conn, "offer").await["seq"].as_u64(), Some(first_seq + 3));
}

#[tokio::test]
async fn a_sender_with_a_message_at_the_actor_does_not_take_the_fast_path() {
    let mut h = Harness::new("unit-order").await;
    let (alice, _) = h.join("alice").await;
    let (bob, _) = h.join("bob").await;
    let table = h.table().await;
    table.queued_at_room(&alice);
    let req = RelayRequest {
        from: &alice,
        to: &bob,
        kind: RelayKind::Offer,
        payload: RelayBody::Sdp(&RawJson::string("v=0")),
        reference: None,
        received_at: Instant::now(),
        again: false,
    };
    assert_eq!(table.relay_from_edge(&req), Relayed::ToRoom, "it must queue behind the earlier message");
    table.handled(&alice);
    assert_eq!(table.relay_from_edge(&req), Relayed::Done);
    // A stopped instance's table is closed.
    h.room.stop_and_wait(None, Some(Duration::from_secs(5))).await.expect("the room stops");
    assert_eq!(table.relay_from_edge(&req), Relayed::ToRoom, "the table stayed open after its room stopped");
}

#[tokio::test]
async fn leaves_are_recorded_and_announced() {
    let mut h = Harness::new("unit-leave").await;
    let (_, a_conn) = h.join("alice").await;
    let (bob, b_conn) = h.join("bob").await;
    h.room.cast(RoomMsg::Leave { peer: bob.clone(), reason: "left".into() }).expect("cast");
    assert_eq!(h.frame(&b_conn, "left").await["roomId"], "unit-leave");
    let left = h.frame(&a_conn, "peer_left").await;
    assert_eq!((left["peerId"].as_str(), left["reason"].as_str()), (Some(bob.as_str()), Some("left")));
    assert_eq!(h.store.leaves.lock().expect("lock").as_slice(), &[(bob.to_string(), "left".to_owned())]);
}

#[tokio::test]
async fn a_restarted_room_takes_its_sessions_back_from_the_store() {
    let mut h = Harness::new("unit-restart").await;
    let (alice, a_conn) = h.join("alice").await;
    let (bob, b_conn) = h.join("bob").await;
    h.frame(&a_conn, "peer_joined").await;
    h.forget_seen();
    // The instance dies; Bob's connection dropped meanwhile.
    h.room.kill();
    h.edge.open.lock().expect("lock").remove(&b_conn);
    h.room = start_room(h.ctx.clone(), &h.room_id).await;
    // The new instance asks Alice's open connection how far she has counted, and tells her Bob
    // is away; nothing reaches her before her count is known.
    let mut reattached = false;
    for _ in 0..10 {
        match h.next().await {
            Seen::Reattach(conn) => {
                assert_eq!(conn, a_conn);
                reattached = true;
                break;
            }
            Seen::Frame(conn, v) => assert_ne!(conn, a_conn, "a frame for alice before her count: {v}"),
            Seen::Receipt(..) => {}
        }
    }
    assert!(reattached, "alice's connection was asked for its count");
    let last_seq = 5;
    h.room.cast(RoomMsg::SeqSync { peer: alice.clone(), conn: a_conn.clone(), last_seq, seq_offset: 0 }).expect("cast");
    let away = h.frame(&a_conn, "peer_disconnected").await;
    assert_eq!(away["peerId"], bob.as_str());
    assert_eq!(away["seq"].as_u64(), Some(last_seq + 1), "numbering follows the client's count");
    // Relaying works again, and Bob's session waits (its frames are kept for his resume).
    h.room.cast(relay(alice.clone(), bob.clone(), "v=0 later", None)).expect("cast");
    let info = match h.room.call(RoomMsg::Info, Some(Duration::from_secs(5))).await {
        Ok(ractor::rpc::CallResult::Success(info)) => info,
        _ => panic!("no info"),
    };
    assert_eq!(info.participants.len(), 2);
    let table = h.table().await;
    let kept = table.lock().session(&bob).map(|s| (s.connected, s.outbox.next_seq));
    assert_eq!(kept.map(|k| k.0), Some(false), "bob is away");
    assert!(kept.is_some_and(|k| k.1 > 1), "the relay was kept for bob");
}

#[tokio::test]
async fn a_restarted_room_takes_no_kept_message_from_a_sender_before_its_count() {
    let mut h = Harness::new("unit-unsynced").await;
    let (alice, a_conn) = h.join("alice").await;
    let (bob, b_conn) = h.join("bob").await;
    h.frame(&a_conn, "peer_joined").await;
    h.room.kill();
    h.room = start_room(h.ctx.clone(), &h.room_id).await;
    // Reached the way this node's connections and the node link reach it.
    let local = crate::room::local::LocalRoom { actor: h.room.clone(), table: h.table().await };
    let offer = |sdp: &str, id: u64| relay(alice.clone(), bob.clone(), sdp, Some(id));
    // Alice's connection still holds message 1, acknowledged by the dead instance and never
    // delivered; it sends 1 again once it knows the room is new. Her newer message 2, sent
    // before that, must not be taken: it would overtake 1.
    assert!(local.relay(&offer("v=0 two", 2)), "taken on the one-hop path");
    let adopted = |p: &PeerId| local.table.lock().session(p).is_some_and(|s| s.adopted);
    assert!(adopted(&alice), "alice's session waits for her count");
    // Her connection found the new instance: its count, then what it kept, in order. The
    // relays right behind the count must not overtake it on the one-hop path.
    let sync = |peer: &PeerId, conn: &ConnId| RoomMsg::SeqSync {
        peer: peer.clone(),
        conn: conn.clone(),
        last_seq: 3,
        seq_offset: 0,
    };
    local.cast(sync(&bob, &b_conn)).expect("cast");
    local.cast(sync(&alice, &a_conn)).expect("cast");
    for (sdp, id) in [("v=0 one", 1), ("v=0 two", 2)] {
        if !local.relay(&offer(sdp, id)) {
            local.cast(offer(sdp, id)).expect("cast");
        }
    }
    let one = h.frame(&b_conn, "offer").await;
    let two = h.frame(&b_conn, "offer").await;
    assert_eq!((one["sdp"].as_str(), two["sdp"].as_str()), (Some("v=0 one"), Some("v=0 two")), "sender order kept");
    assert_eq!(two["seq"].as_u64(), one["seq"].as_u64().map(|s| s + 1));
    // Each acknowledged once: the early 2 was neither taken nor acknowledged.
    let mut acks = Vec::new();
    for _ in 0..2 {
        acks.push(h.frame(&a_conn, "ack").await["ref"].as_u64());
    }
    assert_eq!(acks, vec![Some(1), Some(2)]);
    h.forget_seen();
    assert!(!adopted(&alice));
    let three = offer("v=0 three", 3);
    if !local.relay(&three) {
        local.cast(three).expect("cast");
    }
    assert_eq!(h.frame(&b_conn, "offer").await["sdp"], "v=0 three");
    assert!(h.backlog.iter().all(|s| !matches!(s, Seen::Frame(_, v) if v["type"] == "ack" && v["ref"] == 2)));
}
