//! Appointments: a host books a call with a guest, the guest confirms, the host starts it, both
//! join, either ends it; outsiders are refused everything; the join window, no-shows and an
//! unexpected leave; every step's notifications pushed to the people's open connections,
//! persisted, and on the event bus; across nodes, the end reaches the room where it runs.

use crate::events_bus::Events;
use crate::support::{Client, TestServer, WAIT, fresh_postgres, node_token};
use serde_json::{Value, json};
use std::time::Duration;

/// Unix ms now, and an RFC 3339 time `offset_ms` from now.
fn at(offset_ms: i64) -> String {
    let now = switchboard_actors::ports::now_ms();
    switchboard::appointments::rfc3339(now + offset_ms)
}

/// A POST with a bearer token: (status, JSON body).
async fn post(s: &TestServer, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = s.http.post(s.url(path)).bearer_auth(token).json(&body).send().await.expect("post");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get(s: &TestServer, path: &str, token: &str) -> (u16, Value) {
    let r = s.http.get(s.url(path)).bearer_auth(token).send().await.expect("get");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The next notification pushed to `c` (other frames skipped), bounded.
async fn notification(c: &mut Client, kind: &str) -> Value {
    for _ in 0..50 {
        let v = c.recv().await;
        if v["type"] == "notification" {
            assert_eq!(v["notification"]["kind"], kind, "{v}");
            return v["notification"].clone();
        }
    }
    panic!("no {kind} notification among the next 50 frames");
}

/// Reads the appointment until `want` holds (its arrival is recorded after the join's answer).
async fn appointment_until(s: &TestServer, id: &str, token: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = get(s, &format!("/appointments/{id}"), token).await.1;
        if want(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("appointment never reached the state wanted: {last}");
}

/// Reads `c`'s frames (at most 50) until its call has ended (`call_status: ended`) and, when
/// `kind` is given, a notification of that kind has come; panics otherwise.
async fn sees_the_end(c: &mut Client, kind: Option<&str>, who: &str) {
    let (mut ended, mut told) = (false, kind.is_none());
    for _ in 0..50 {
        let v = c.recv().await;
        ended |= v["type"] == "call_status" && v["status"] == "ended";
        told |= v["type"] == "notification" && Some(v["notification"]["kind"].as_str().unwrap_or("")) == kind;
        if ended && told {
            return;
        }
    }
    panic!("{who}: the call ended {ended}, notified {told}");
}

/// A started appointment between `dr` and `pat` with both in its room: (id, room, the host's
/// connection, the guest's).
async fn both_in_the_call(s: &TestServer, dr: &str, pat: &str) -> (String, String, Client, Client) {
    let (_, a) = post(s, "/appointments", dr, json!({"hostId": "dr", "guestIds": ["pat"], "start": at(0)})).await;
    let (id, room) = (a["id"].as_str().expect("id").to_owned(), a["roomId"].as_str().expect("room").to_owned());
    assert_eq!(post(s, &format!("/appointments/{id}/start"), dr, json!({})).await.0, 200);
    let mut dr_ws = Client::connect(s.addr, dr).await;
    assert_eq!(join(&mut dr_ws, &room).await["type"], "joined");
    let mut pat_ws = Client::connect(s.addr, pat).await;
    assert_eq!(join(&mut pat_ws, &room).await["type"], "joined");
    (id, room, dr_ws, pat_ws)
}

async fn join(c: &mut Client, room: &str) -> Value {
    c.send(json!({"type": "join", "roomId": room, "id": "j"})).await;
    loop {
        let v = c.recv().await;
        if v["type"] == "joined" || v["type"] == "error" {
            if v["type"] == "joined" {
                c.peer_id = v["peerId"].as_str().expect("peerId").to_owned();
            }
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appointment_from_booking_to_its_end_and_nobody_else_sees_it() {
    let mut s = TestServer::start().await;
    let mut events = Events::subscribe(s.app().bus.url(), "default").await;
    let (dr, pat, eve) = (
        s.token(json!({"userId": "dr-who"})).await,
        s.token(json!({"userId": "pat"})).await,
        s.token(json!({"userId": "eve"})).await,
    );
    let mut pat_ws = Client::connect(s.addr, &pat).await;
    let mut dr_ws = Client::connect(s.addr, &dr).await;

    // Booked by the host: proposed, the guest told at once.
    let booking = json!({"hostId": "dr-who", "guestIds": ["pat"], "start": at(60_000), "online": true});
    let (status, a) = post(&s, "/appointments", &dr, booking).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!((a["status"].as_str(), a["callStatus"].as_str()), (Some("proposed"), Some("not_started")), "{a}");
    let (id, room) = (a["id"].as_str().expect("id").to_owned(), a["roomId"].as_str().expect("room").to_owned());
    let booked = notification(&mut pat_ws, "appointment.booked").await;
    assert_eq!(booked["data"]["appointmentId"], id.as_str());

    // An outsider learns nothing and can do nothing, on REST and on the WebSocket.
    assert_eq!(get(&s, &format!("/appointments/{id}"), &eve).await.0, 404);
    for action in ["confirm", "start", "end", "cancel"] {
        assert_eq!(post(&s, &format!("/appointments/{id}/{action}"), &eve, json!({})).await.0, 404, "{action}");
    }
    assert_eq!(get(&s, "/appointments?mine", &eve).await.1["appointments"], json!([]));
    assert_eq!(get(&s, &format!("/rooms/{room}"), &eve).await.0, 403);
    let mut eve_ws = Client::connect(s.addr, &eve).await;
    assert_eq!(join(&mut eve_ws, &room).await["code"], "room_forbidden");
    let booking = json!({"hostId": "dr-who", "guestIds": ["pat"], "start": at(0)});
    assert_eq!(post(&s, "/appointments", &eve, booking).await.0, 403, "nobody books for others");

    // Not started: nobody may join yet; only the host starts it.
    assert_eq!(join(&mut pat_ws, &room).await["code"], "not_open");
    assert_eq!(post(&s, &format!("/appointments/{id}/start"), &pat, json!({})).await.0, 403);

    // The guest confirms: booked, the host told.
    let (status, a) = post(&s, &format!("/appointments/{id}/confirm"), &pat, json!({})).await;
    assert_eq!((status, a["status"].as_str()), (200, Some("booked")), "{a}");
    notification(&mut dr_ws, "appointment.confirmed").await;

    // The host starts the call: waiting, the guest told.
    let (status, a) = post(&s, &format!("/appointments/{id}/start"), &dr, json!({})).await;
    assert_eq!((status, a["callStatus"].as_str()), (200, Some("waiting")), "{a}");
    let started = notification(&mut pat_ws, "appointment.started").await;
    assert_eq!(started["data"]["roomId"], room.as_str());

    // Both join; the guest's arrival makes it arrived and the call active.
    assert_eq!(join(&mut dr_ws, &room).await["type"], "joined");
    assert_eq!(join(&mut pat_ws, &room).await["type"], "joined");
    let a = appointment_until(&s, &id, &pat, |a| a["status"] == "arrived").await;
    assert_eq!(a["callStatus"], "active", "{a}");
    dr_ws.send(json!({"type": "chat", "text": "how are you?"})).await;
    assert_eq!(pat_ws.recv_type("chat").await["message"]["text"], "how are you?");

    // The host ends it: fulfilled, the guest's call ended in the room and the guest told.
    let (status, a) = post(&s, &format!("/appointments/{id}/end"), &dr, json!({})).await;
    assert_eq!((status, a["status"].as_str(), a["callStatus"].as_str()), (200, Some("fulfilled"), Some("ended")));
    sees_the_end(&mut pat_ws, Some("appointment.ended"), "the guest").await;
    assert_eq!(post(&s, &format!("/appointments/{id}/cancel"), &pat, json!({})).await.0, 409, "over");

    // Persisted: unread first; read once; nobody else's to read.
    let (_, list) = get(&s, "/notifications", &pat).await;
    let kinds: Vec<&str> =
        list["notifications"].as_array().expect("list").iter().map(|n| n["kind"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["appointment.ended", "appointment.started", "appointment.booked"], "{list}");
    assert_eq!(list["unread"], 3);
    let first = list["notifications"][2]["id"].as_str().expect("id").to_owned();
    assert_eq!(post(&s, &format!("/notifications/{first}/read"), &eve, json!({})).await.0, 404);
    let (status, read) = post(&s, &format!("/notifications/{first}/read"), &pat, json!({})).await;
    assert!(status == 200 && read["readAt"].is_i64(), "{read}");
    let (_, list) = get(&s, "/notifications", &pat).await;
    assert_eq!(list["unread"], 2);
    assert_eq!(list["notifications"][2]["id"], first.as_str(), "read ones after the unread");

    // On the bus: each change and each notification, under the appointment's room.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(seen.contains(&"appointment.updated/ended".to_owned())
        && seen.iter().filter(|k| k.starts_with("notification.created")).count() >= 4)
    {
        assert!(tokio::time::Instant::now() < deadline, "bus events missing: {seen:?}");
        for e in events.take(1).await {
            if e.room_id == room {
                let what = e.data["change"].as_str().or(e.data["kind"].as_str()).unwrap_or("").to_owned();
                seen.push(format!("{}/{what}", e.kind));
            }
        }
    }
    assert!(seen.contains(&"appointment.updated/booked".to_owned()), "{seen:?}");
    assert!(seen.contains(&"notification.created/appointment.started".to_owned()), "{seen:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_window_opens_before_the_start_and_nobody_coming_is_a_no_show() {
    let mut s = TestServer::start_with(|c| {
        c.appointments.join_window = Duration::from_secs(60);
        c.appointments.noshow_after = Duration::from_millis(1500);
        c.appointments.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let (dr, pat) = (s.token(json!({"userId": "dr"})).await, s.token(json!({"userId": "pat"})).await);

    // Ten minutes ahead, the window (one minute) is not open yet.
    let later = json!({"hostId": "dr", "guestIds": ["pat"], "start": at(600_000)});
    let (_, a) = post(&s, "/appointments", &dr, later).await;
    let (status, refused) =
        post(&s, &format!("/appointments/{}/start", a["id"].as_str().expect("id")), &dr, json!({})).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("too_early")), "{refused}");

    // Half a minute ahead: inside the window. The host starts and waits; the guest never comes.
    let soon = json!({"hostId": "dr", "guestIds": ["pat"], "start": at(200)});
    let (_, a) = post(&s, "/appointments", &dr, soon).await;
    let (id, room) = (a["id"].as_str().expect("id").to_owned(), a["roomId"].as_str().expect("room").to_owned());
    assert_eq!(post(&s, &format!("/appointments/{id}/start"), &dr, json!({})).await.0, 200);
    let mut dr_ws = Client::connect(s.addr, &dr).await;
    assert_eq!(join(&mut dr_ws, &room).await["type"], "joined");
    let mut pat_ws = Client::connect(s.addr, &pat).await;
    let noshow = notification(&mut pat_ws, "appointment.noshow").await;
    assert_eq!(noshow["data"]["status"], "noshow");
    sees_the_end(&mut dr_ws, Some("appointment.noshow"), "the host's waiting call, at the no-show").await;
    let a = appointment_until(&s, &id, &dr, |a| a["status"] == "noshow").await;
    assert_eq!((a["callStatus"].as_str(), a["endedBy"].as_str()), (Some("ended"), Some("system")), "{a}");
    assert_eq!(join(&mut pat_ws, &room).await["code"], "not_open", "over: nobody joins");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_connection_drops_is_reported_to_the_host() {
    let mut s = TestServer::start().await;
    let (dr, pat) = (s.token(json!({"userId": "dr"})).await, s.token(json!({"userId": "pat"})).await);
    let (_, _, mut dr_ws, pat_ws) = both_in_the_call(&s, &dr, &pat).await;
    drop(pat_ws);
    let left = notification(&mut dr_ws, "appointment.peer_left").await;
    assert!(left["title"].as_str().is_some_and(|t| t.contains("pat")), "{left}");
    // Reported once, and kept.
    let (_, list) = get(&s, "/notifications", &dr).await;
    assert_eq!(list["unread"], 1, "{list}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_on_another_node_ends_the_call_where_the_room_runs() {
    use crate::cluster::{member, until};
    let Some(db) = fresh_postgres("ending_on_another_node_ends_the_call").await else { return };
    let (n1, _d1) = member(&db, "n1", &[], &[]);
    let (n2, _d2) = member(&db, "n2", &[&n1], &[]);
    for n in [&n1, &n2] {
        until(n, "formed", |v| v.len() == 2 && v.values().all(|s| s == "up")).await;
    }
    let http = reqwest::Client::new();
    let (dr, pat) = (node_token(n1.addr, "dr").await, node_token(n2.addr, "pat").await);
    let booking = json!({"hostId": "dr", "guestIds": ["pat"], "start": at(0)});
    let a: Value = http
        .post(format!("http://{}/appointments", n1.addr))
        .bearer_auth(&dr)
        .json(&booking)
        .send()
        .await
        .expect("book")
        .json()
        .await
        .expect("json");
    let (id, room) = (a["id"].as_str().expect("id").to_owned(), a["roomId"].as_str().expect("room").to_owned());
    let start = http.post(format!("http://{}/appointments/{id}/start", n2.addr)).bearer_auth(&dr).send().await;
    assert_eq!(start.expect("start").status(), 200);
    // The guest on n2 is told (the start was on n2, the guest's connection too), joins there.
    let mut pat_ws = Client::connect(n2.addr, &pat).await;
    let mut dr_ws = Client::connect(n1.addr, &dr).await;
    assert_eq!(join(&mut dr_ws, &room).await["type"], "joined");
    assert_eq!(join(&mut pat_ws, &room).await["type"], "joined");
    // Ended through the node that does not run the room; the host has a second connection
    // open on the room's node, which hears of it from the other node.
    let cluster: Value =
        http.get(format!("http://{}/api/cluster", n1.addr)).send().await.expect("map").json().await.expect("json");
    let owner = cluster["rooms"].as_array().and_then(|r| r.iter().find(|r| r["roomId"] == room.as_str()).cloned());
    let owner = owner.and_then(|r| r["nodeId"].as_str().map(str::to_owned)).expect("the room is in the map");
    let (owner_addr, other_addr) = if owner == "n1" { (n1.addr, n2.addr) } else { (n2.addr, n1.addr) };
    let mut dr_phone = Client::connect(owner_addr, &dr).await;
    dr_phone.send(json!({"type": "ping"})).await;
    dr_phone.recv_type("pong").await;
    let end = http.post(format!("http://{other_addr}/appointments/{id}/end")).bearer_auth(&pat).send().await;
    assert_eq!(end.expect("end").status(), 200);
    let told = notification(&mut dr_phone, "appointment.ended").await;
    assert_eq!(told["data"]["status"], "fulfilled", "{told}");
    // The host (on n1) sees the call end and is notified from n2; the guest, who ended it,
    // sees it end.
    sees_the_end(&mut dr_ws, Some("appointment.ended"), "the host, told across nodes").await;
    sees_the_end(&mut pat_ws, None, "the guest, who ended it").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_every_appointment_but_starts_only_its_own() {
    let mut s = TestServer::start().await;
    let dr = s.token(json!({"userId": "dr"})).await;
    let ops = s.token(json!({"userId": "ops", "grants": {"roomAdmin": true}})).await;
    let (_, theirs) =
        post(&s, "/appointments", &dr, json!({"hostId": "dr", "guestIds": ["pat"], "start": at(0)})).await;
    let theirs = theirs["id"].as_str().expect("id").to_owned();
    let (status, mine) =
        post(&s, "/appointments", &ops, json!({"hostId": "ops", "guestIds": ["pat"], "start": at(0)})).await;
    assert_eq!(status, 201, "{mine}");
    let mine = mine["id"].as_str().expect("id").to_owned();
    assert_eq!(get(&s, &format!("/appointments/{theirs}"), &ops).await.0, 200, "the operator sees it");
    assert_eq!(post(&s, &format!("/appointments/{theirs}/start"), &ops, json!({})).await.0, 403, "not its to start");
    assert_eq!(post(&s, &format!("/appointments/{mine}/start"), &ops, json!({})).await.0, 200, "its own");
    assert_eq!(post(&s, &format!("/appointments/{theirs}/cancel"), &ops, json!({})).await.1["status"], "cancelled");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_call_in_the_appointments_room_ends_the_appointment() {
    let mut s = TestServer::start().await;
    let (dr, pat) = (s.token(json!({"userId": "dr"})).await, s.token(json!({"userId": "pat"})).await);
    let (id, _, mut dr_ws, mut pat_ws) = both_in_the_call(&s, &dr, &pat).await;
    appointment_until(&s, &id, &dr, |a| a["status"] == "arrived").await;
    pat_ws.send(json!({"type": "end_call", "id": "bye"})).await;
    assert_eq!(pat_ws.recv_type("ack").await["ref"], "bye");
    sees_the_end(&mut dr_ws, Some("appointment.ended"), "the host").await;
    let a = appointment_until(&s, &id, &dr, |a| a["status"] == "fulfilled").await;
    assert_eq!((a["callStatus"].as_str(), a["endedBy"].as_str()), (Some("ended"), Some("pat")), "{a}");
    pat_ws.send(json!({"type": "end_call", "id": "again"})).await;
    assert!(pat_ws.recv_type("error").await["message"].as_str().is_some_and(|m| m.contains("over")));
    s.stop().await;
}
