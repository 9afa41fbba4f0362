//! The store behaves the same on SQLite and PostgreSQL: migrations, rooms, sessions, call
//! status transitions with their outbox events, chat paging, media state, reconciliation.

use crate::support::fresh_postgres;
use std::time::Duration;
use switchboard::store::Store;
use switchboard_actors::call_status::{CallStatus, CallTransition};
use switchboard_actors::ids::{ConnId, PeerId, RoomId, UserId};
use switchboard_actors::media::{ControlAction, MediaState};
use switchboard_actors::ports::{CallChange, Fence, RoomPolicy, RoomStore, StoreError, StoredParticipant, now_ms};
use switchboard_actors::protocol::ChatMessage;

fn participant(peer: &str, user: &str) -> StoredParticipant {
    StoredParticipant {
        peer_id: PeerId::new(peer),
        user_id: UserId::new(user),
        display_name: user.to_uppercase(),
        conn_id: ConnId::new(format!("conn-{peer}")),
        media: MediaState::initial(),
        joined_at: now_ms(),
        resume_token: format!("token-{peer}"),
        hidden: false,
    }
}

fn chat(room: &RoomId, seq: i64, text: &str) -> ChatMessage {
    ChatMessage {
        id: format!("m{seq}-{}", room),
        room_id: room.clone(),
        seq,
        peer_id: PeerId::new("p1"),
        user_id: UserId::new("alice"),
        display_name: "ALICE".into(),
        text: text.into(),
        sent_at: now_ms(),
    }
}

async fn exercise(url: &str) {
    let store = Store::open(url, 4, "node-a").await.expect("open and migrate");
    // Migrating again is a no-op.
    Store::open(url, 2, "node-a").await.expect("reopen").close().await;

    let room = RoomId::new("store-room");
    let policy = RoomPolicy { max_participants: 4, invitees: None };
    let loaded = store.load_room(&room, &policy, 10).await.expect("load creates");
    assert_eq!(loaded.status, CallStatus::NotStarted);
    assert!(loaded.participants.is_empty());
    assert_eq!(loaded.next_chat_seq, 1);
    assert!(!store.create_room("store-room", &policy, "t").await.expect("create"), "exists already");
    let closed = RoomPolicy { max_participants: 2, invitees: Some(vec![UserId::new("doc")]) };
    assert!(store.create_room("closed-room", &closed, "t").await.expect("create"));
    let row = store.room("closed-room").await.expect("room").expect("exists");
    assert_eq!(row.invitees, Some(vec!["doc".to_owned()]));

    let open =
        CallChange { call_id: "call-1".into(), transition: CallTransition::Open(CallStatus::Waiting), reason: None };
    store.record_join(&room, &participant("p1", "alice"), Some(&open), None).await.expect("join 1");
    let active =
        CallChange { call_id: "call-1".into(), transition: CallTransition::Change(CallStatus::Active), reason: None };
    store.record_join(&room, &participant("p2", "bob"), Some(&active), None).await.expect("join 2");
    let mut media = MediaState::initial();
    media.apply(ControlAction::MuteAudio);
    store.record_media(&PeerId::new("p2"), &media, None).await.expect("media");

    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        store.append_chat(&chat(&room, i as i64 + 1, text), None).await.expect("chat");
    }
    assert!(store.append_chat(&chat(&room, 2, "dup"), None).await.is_err(), "a chat seq is unique per room");
    let page: Vec<String> =
        store.chat("store-room", Some(3), 1).await.expect("page").into_iter().map(|m| m.text).collect();
    assert_eq!(page, ["two"]);

    let loaded = store.load_room(&room, &policy, 2).await.expect("reload");
    assert_eq!(loaded.status, CallStatus::Active);
    assert_eq!(loaded.call_id.as_deref(), Some("call-1"));
    assert_eq!(loaded.participants.len(), 2);
    assert!(loaded.participants[1].media.audio_muted, "media state persisted");
    assert_eq!(loaded.recent_chat.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["two", "three"]);
    assert_eq!(loaded.next_chat_seq, 4);
    assert!(store.is_member("store-room", "bob").await.expect("member"));
    assert!(!store.is_member("store-room", "mallory").await.expect("member"));
    assert!(store.is_member("closed-room", "doc").await.expect("invitee"));

    store.record_leave(&room, &PeerId::new("p1"), "left", None, None).await.expect("leave");
    // Leaving twice records nothing more.
    store.record_leave(&room, &PeerId::new("p1"), "left", None, None).await.expect("leave again");

    // p2 is still in; a crash now leaves the call open. Reconciliation ends it.
    let (sessions, calls) = store.reconcile(true).await.expect("reconcile");
    assert_eq!((sessions, calls), (1, 1));
    let loaded = store.load_room(&room, &policy, 2).await.expect("reload");
    assert_eq!(loaded.status, CallStatus::Ended);
    assert!(loaded.participants.is_empty());
    let calls = store.calls("store-room").await.expect("calls");
    assert_eq!(calls, vec![("call-1".to_owned(), CallStatus::Ended, Some("reconciled".to_owned()))]);

    let kinds: Vec<String> = store.events("store-room").await.expect("events").into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, crate::support::RECONCILED_CALL_EVENTS);
    // Another node's open sessions are not this node's to reconcile.
    let other = Store::open(url, 2, "node-b").await.expect("open as node-b");
    let open2 =
        CallChange { call_id: "call-2".into(), transition: CallTransition::Open(CallStatus::Waiting), reason: None };
    store.record_join(&room, &participant("p3", "carol"), Some(&open2), None).await.expect("join 3");
    assert_eq!(other.reconcile(true).await.expect("reconcile"), (0, 0));
    leases(&store).await;
    takeover(&store).await;
    store.close().await;
}

/// A batch takeover: the rooms of a node whose lease ended are taken in one call with higher
/// epochs, a room with a live owner is left alone, nothing is taken twice, and the batch read
/// gives what `load_room` gives for each room.
async fn takeover(store: &Store) {
    let ttl = Duration::from_secs(30);
    let claim = |node: &'static str| {
        let store = store.clone();
        async move { store.claim_node(node, "i1", "127.0.0.1:1", "127.0.0.1:2", ttl).await.expect("claim").0 }
    };
    let (t_dead, t_taker, t_live) = (claim("node-t1").await, claim("node-t2").await, claim("node-t3").await);
    let policy = RoomPolicy { max_participants: 6, invitees: None };
    let rooms: Vec<RoomId> = (0..4).map(|i| RoomId::new(format!("batch-{i}"))).collect();
    let mut epochs = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        store.load_room(room, &policy, 10).await.expect("room");
        let (node, term) = if i == 2 { ("node-t3", t_live) } else { ("node-t1", t_dead) };
        let epoch = store.acquire_lease(room, node, term).await.expect("db").expect("free room");
        let fence = Fence { room: room.clone(), node: node.into(), term, epoch };
        store.record_join(room, &participant(&format!("b{i}a"), "alice"), None, Some(&fence)).await.expect("join");
        store.record_join(room, &participant(&format!("b{i}b"), "bob"), None, Some(&fence)).await.expect("join");
        for seq in 1..=(i as i64 + 1) {
            store.append_chat(&chat(room, seq, &format!("hello {seq}")), Some(&fence)).await.expect("chat");
        }
        epochs.push(epoch);
    }
    // node-t1's lease ends (a new term: its old term's rooms are unowned at once).
    store.new_node_term("node-t1", "i1", ttl).await.expect("db").expect("own row");
    let ids: Vec<String> = rooms.iter().map(|r| r.to_string()).chain(["batch-0".into()]).collect();
    let mut taken = store.take_rooms(&ids, "node-t2", t_taker).await.expect("take");
    taken.sort();
    let names: Vec<&str> = taken.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["batch-0", "batch-1", "batch-3"], "the live owner's room is left alone");
    for (room, epoch) in &taken {
        let i: usize = room["batch-".len()..].parse().expect("index");
        assert!(*epoch > epochs[i], "{room}: epoch {epoch} after {}", epochs[i]);
        assert_eq!(store.lease_holder(room).await.expect("db").as_deref(), Some("node-t2"));
    }
    assert!(store.take_rooms(&ids, "node-t2", t_taker).await.expect("take").is_empty(), "nothing is taken twice");
    assert!(store.take_rooms(&ids, "node-t2", t_taker + 1).await.expect("take").is_empty(), "a term not held");
    let read = store.load_rooms(&ids, 2).await.expect("load");
    assert_eq!(read.len(), 4);
    for room in &rooms {
        let one = store.load_room(room, &policy, 2).await.expect("load one");
        let batch = &read[room.as_str()];
        let peers = |r: &switchboard_actors::ports::StoredRoom| {
            r.participants.iter().map(|p| (p.peer_id.to_string(), p.conn_id.to_string())).collect::<Vec<_>>()
        };
        assert_eq!(peers(batch), peers(&one), "{room}");
        assert_eq!(batch.participants.len(), 2);
        let texts = |r: &switchboard_actors::ports::StoredRoom| {
            r.recent_chat.iter().map(|m| (m.seq, m.text.clone())).collect::<Vec<_>>()
        };
        assert_eq!(texts(batch), texts(&one), "{room}");
        assert_eq!(batch.next_chat_seq, one.next_chat_seq, "{room}");
        assert_eq!(batch.policy.max_participants, 6);
    }
    assert_eq!(read["batch-3"].recent_chat.len(), 2, "the two latest of four");
    assert_eq!(read["batch-3"].next_chat_seq, 5);
}

/// Ownership under node leases: one live owner, epochs rise with each new owner, stale fences
/// are refused, and a room's row is live exactly while its node's lease at its term is.
async fn leases(store: &Store) {
    let room = RoomId::new("lease-room");
    let policy = RoomPolicy { max_participants: 4, invitees: None };
    store.load_room(&room, &policy, 1).await.expect("room");
    let ttl = Duration::from_millis(400);
    let claim = |node: &'static str, inc: &'static str| {
        let store = store.clone();
        async move { store.claim_node(node, inc, "127.0.0.1:1", "127.0.0.1:2", ttl).await.expect("claim").0 }
    };
    let (ta, tb, tc) = (claim("node-a", "a1").await, claim("node-b", "b1").await, claim("node-c", "c1").await);
    assert!(store.set_cordoned("node-b", true).await.expect("db"));
    assert!(!store.set_cordoned("node-z", true).await.expect("db"), "no such node");
    let states = store.node_states().await.expect("db");
    let b = states.iter().find(|s| s.node_id == "node-b").expect("node-b");
    assert!(b.live && b.cordoned && b.term == tb && b.cluster_addr == "127.0.0.1:1", "{b:?}");
    assert!(states.iter().filter(|s| s.node_id != "node-b").all(|s| s.live && !s.cordoned));
    store.set_cordoned("node-b", false).await.expect("db");
    let e1 = store.acquire_lease(&room, "node-a", ta).await.expect("db").expect("free room");
    assert_eq!(
        store.acquire_lease(&room, "node-b", tb).await.expect("db"),
        Err("node-a".to_owned()),
        "owned by node-a"
    );
    assert_eq!(
        store.acquire_lease(&room, "node-b", tb + 1).await.expect("db"),
        Err("node-a".to_owned()),
        "a term not held"
    );
    let fence_a = Fence { room: room.clone(), node: "node-a".into(), term: ta, epoch: e1 };
    store.append_chat(&chat(&room, 1, "fenced ok"), Some(&fence_a)).await.expect("a write with the live fence");
    let (nodes_before, rooms_before) = store.ownership_writes();

    // Renewing node leases writes node rows only: the room's row is not touched.
    for _ in 0..3 {
        assert!(store.renew_node_lease("node-a", "a1", ta, ttl).await.expect("db"));
        assert!(store.renew_node_lease("node-b", "b1", tb, ttl).await.expect("db"));
    }
    assert!(!store.renew_node_lease("node-a", "other", ta, ttl).await.expect("db"), "another process's renewal");
    let (nodes_after, rooms_after) = store.ownership_writes();
    assert_eq!((nodes_after - nodes_before, rooms_after - rooms_before), (7, 0));

    // node-a goes silent; once its node lease runs out node-b takes the room with a higher epoch.
    let mut e2 = None;
    for _ in 0..100 {
        assert!(store.renew_node_lease("node-b", "b1", tb, ttl).await.expect("db"));
        if let Ok(epoch) = store.acquire_lease(&room, "node-b", tb).await.expect("db") {
            e2 = Some(epoch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e2 = e2.expect("takeover after node-a's lease ran out");
    assert!(e2 > e1, "epochs rise: {e1} then {e2}");
    let fence_b = Fence { room: room.clone(), node: "node-b".into(), term: tb, epoch: e2 };

    // The old owner wakes up: its renewal is refused, and so is every write it tries, even
    // under a new term of its node lease.
    assert!(!store.renew_node_lease("node-a", "a1", ta, ttl).await.expect("db"), "a lapsed term is not renewed");
    let ta2 = store.new_node_term("node-a", "a1", ttl).await.expect("db").expect("own row");
    assert!(ta2 > ta);
    let stale = store.append_chat(&chat(&room, 2, "stale"), Some(&fence_a)).await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))), "stale write refused: {stale:?}");
    let stale = store.record_media(&PeerId::new("p1"), &MediaState::initial(), Some(&fence_a)).await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))));
    assert_eq!(store.chat("lease-room", None, 10).await.expect("chat").len(), 1, "nothing stale was written");
    store.append_chat(&chat(&room, 2, "new owner"), Some(&fence_b)).await.expect("the new owner writes");

    // A hand-off: node-b keeps the room and node-c takes it over with the next epoch; nobody
    // else could take it in between, and the handed fence works only once.
    assert!(store.renew_node_lease("node-c", "c1", tc, ttl).await.is_ok());
    let tc = match store.renew_node_lease("node-c", "c1", tc, ttl).await.expect("db") {
        true => tc,
        false => store.new_node_term("node-c", "c1", ttl).await.expect("db").expect("own row"),
    };
    assert!(store.renew_node_lease("node-b", "b1", tb, ttl).await.expect("db"));
    let e3 = store.transfer_lease(&fence_b, "node-c", tc).await.expect("db").expect("handed over");
    assert!(e3 > e2);
    assert_eq!(store.lease_holder("lease-room").await.expect("db").as_deref(), Some("node-c"));
    assert_eq!(store.transfer_lease(&fence_b, "node-a", ta2).await.expect("db"), None, "a stale hand-off");
    let fence_c = Fence { room: room.clone(), node: "node-c".into(), term: tc, epoch: e3 };

    // A clean release frees the room at once.
    store.release_lease(&fence_c).await.expect("release");
    assert_eq!(store.lease_holder("lease-room").await.expect("db"), None);
    let e5 = store.acquire_lease(&room, "node-a", ta2).await.expect("db").expect("released room");
    assert!(e5 > e3);

    // A new term of node-a's lease leaves its rooms unowned at once, before the old term's
    // lease would have run out: anyone (node-a included, at its new term) may take them.
    let ta3 = store.new_node_term("node-a", "a1", ttl).await.expect("db").expect("own row");
    assert_eq!(store.lease_holder("lease-room").await.expect("db"), None, "the old term's rooms are unowned");
    let e6 = store.acquire_lease(&room, "node-a", ta3).await.expect("db").expect("taken at the new term");
    assert!(e6 > e5);

    // A clean stop gives the node lease up: the next process with the id claims it at once,
    // with a higher term, and the rooms of the old one are unowned.
    store.release_node("node-a", "a1").await.expect("release node");
    assert_eq!(store.lease_holder("lease-room").await.expect("db"), None);
    let ta4 = claim("node-a", "a2").await;
    assert!(ta4 > ta3, "terms never repeat: {ta3} then {ta4}");
}

#[tokio::test]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("store.db").display());
    exercise(&url).await;
}

#[tokio::test]
async fn store_on_postgres() {
    let Some(url) = fresh_postgres("store_on_postgres").await else { return };
    exercise(&url).await;
}
