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
    store.close().await;
}

/// Leases: one live holder, epochs rise with each new owner, stale fences are refused.
async fn leases(store: &Store) {
    let room = RoomId::new("lease-room");
    let policy = RoomPolicy { max_participants: 4, invitees: None };
    store.load_room(&room, &policy, 1).await.expect("room");
    let ttl = Duration::from_millis(400);
    let e1 = store.acquire_lease(&room, "node-a", ttl).await.expect("db").expect("free lease");
    assert_eq!(
        store.acquire_lease(&room, "node-b", ttl).await.expect("db"),
        Err("node-a".to_owned()),
        "held by node-a"
    );
    let fence_a = Fence { room: room.clone(), node: "node-a".into(), epoch: e1 };
    assert!(store.renew_lease(&fence_a, ttl).await.expect("db"));
    store.append_chat(&chat(&room, 1, "fenced ok"), Some(&fence_a)).await.expect("a write with the live fence");

    // node-a goes silent; once the lease expires node-b takes over with a higher epoch.
    let mut e2 = None;
    for _ in 0..100 {
        if let Ok(epoch) = store.acquire_lease(&room, "node-b", ttl).await.expect("db") {
            e2 = Some(epoch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e2 = e2.expect("takeover after expiry");
    assert!(e2 > e1, "epochs rise: {e1} then {e2}");
    let fence_b = Fence { room: room.clone(), node: "node-b".into(), epoch: e2 };

    // The old owner wakes up: every write and renewal it tries is refused.
    assert!(!store.renew_lease(&fence_a, ttl).await.expect("db"), "stale renewal refused");
    let stale = store.append_chat(&chat(&room, 2, "stale"), Some(&fence_a)).await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))), "stale write refused: {stale:?}");
    let stale = store.record_media(&PeerId::new("p1"), &MediaState::initial(), Some(&fence_a)).await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))));
    assert_eq!(store.chat("lease-room", None, 10).await.expect("chat").len(), 1, "nothing stale was written");
    store.append_chat(&chat(&room, 2, "new owner"), Some(&fence_b)).await.expect("the new owner writes");

    // A hand-off: node-b keeps its lease live and node-c takes it over with the next epoch;
    // nobody else could take it in between, and the handed fence works only once.
    let e3 = store.transfer_lease(&fence_b, "node-c", ttl).await.expect("db").expect("handed over");
    assert!(e3 > e2);
    assert_eq!(store.lease_holder("lease-room").await.expect("db").as_deref(), Some("node-c"));
    assert_eq!(store.transfer_lease(&fence_b, "node-d", ttl).await.expect("db"), None, "a stale hand-off");
    assert!(!store.renew_lease(&fence_b, ttl).await.expect("db"), "the giver no longer holds it");
    let fence_c = Fence { room: room.clone(), node: "node-c".into(), epoch: e3 };

    // A clean release frees the room at once.
    store.release_lease(&fence_c).await.expect("release");
    let e5 = store.acquire_lease(&room, "node-e", ttl).await.expect("db").expect("released lease");
    let fence_e = Fence { room: room.clone(), node: "node-e".into(), epoch: e5 };

    // A lease handed over in a drain that took longer than its lifetime: once it has run out,
    // node-e (which stopped the room and carries its state) gives it a lifetime again, for its
    // successor to take over; nobody else could have taken it in between.
    let mut expired = false;
    for _ in 0..100 {
        if store.lease_holder("lease-room").await.expect("db").is_none() {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(expired, "node-e's lease runs out");
    assert!(store.extend_handed_lease(&fence_e, ttl).await.expect("db"), "an unclaimed lease is extended");
    assert_eq!(store.lease_holder("lease-room").await.expect("db").as_deref(), Some("node-e"));
    assert_eq!(store.acquire_lease(&room, "node-f", ttl).await.expect("db"), Err("node-e".to_owned()));
    // One that was taken meanwhile is not: a stale fence extends nothing.
    assert!(!store.extend_handed_lease(&fence_c, ttl).await.expect("db"), "a stale fence");
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
