//! The event bus: outbox events reach a real broker (the embedded one always, Mosquitto when
//! `SWITCHBOARD_TEST_MQTT_URL` is set) with their typed payloads, in order per room, and are
//! marked published only after the broker acknowledged them; they wait while the broker is
//! unreachable and go out when it returns (and so do snapshot jobs for CV workers on the bus);
//! subscriptions come back after a broker restart; and
//! when the publishing node dies, another node's publisher takes over without a gap.

use crate::support::{Node, TestServer, WAIT, fresh_postgres, node_token};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard::bus::broker::EmbeddedBroker;
use switchboard::bus::outbox_publisher::LEASE;
use switchboard::bus::{Bus, Delivery, topics};
use switchboard::events::Envelope;
use switchboard::store::Store;
use tokio::sync::mpsc;

/// A subscriber to one cluster's events, proven subscribed before the test goes on.
pub(crate) struct Events {
    bus: Bus,
    rx: mpsc::Receiver<Delivery>,
    cluster: String,
}

impl Events {
    pub(crate) async fn subscribe(url: &str, cluster: &str) -> Events {
        let bus = Bus::connect(url, &format!("test-{:08x}", rand::random::<u32>())).expect("bus");
        let rx = bus.subscribe(&topics::all_events(cluster), 4096);
        assert!(bus.wait_connected(WAIT).await, "test subscriber did not connect to {url}");
        let mut events = Events { bus, rx, cluster: cluster.to_owned() };
        events.probe().await;
        events
    }

    /// Publishes probes until one comes back: the subscription is active from then on.
    async fn probe(&mut self) {
        let topic = topics::event(&self.cluster, "test.probe");
        let deadline = tokio::time::Instant::now() + WAIT;
        for _ in 0..200 {
            let _ = self.bus.publish(&topic, b"probe".to_vec());
            let until = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            while let Ok(Some(d)) = tokio::time::timeout_at(until, self.rx.recv()).await {
                if d.topic == topic {
                    // Drain the probes still on their way.
                    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), self.rx.recv()).await {}
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "subscription never became active");
        }
        panic!("subscription never became active");
    }

    /// The next `n` outbox events (probes skipped), bounded by time.
    pub(crate) async fn take(&mut self, n: usize) -> Vec<Envelope> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(d)) if !d.topic.ends_with("/test.probe") => {
                    let e: Envelope = serde_json::from_slice(&d.payload).expect("an envelope");
                    assert_eq!(d.topic, topics::event(&self.cluster, &e.kind), "topic names the kind");
                    out.push(e);
                }
                Ok(Some(_)) => {}
                _ => panic!("only {} of {n} events arrived: {out:?}", out.len()),
            }
        }
        out
    }
}

/// Two people meet in a room and one leaves: four events, typed, in order, all marked.
async fn a_short_call_is_published(s: &TestServer, events: &mut Events) {
    let room = format!("bus-{:08x}", rand::random::<u32>());
    let (mut alice, _) = s.joined("alice", &room).await;
    let (mut bob, _) = s.joined("bob", &room).await;
    bob.send(json!({"type": "leave"})).await;
    alice.recv_type("peer_left").await;
    let got = events.take(4).await;
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["session.created", "participant.joined", "participant.joined", "participant.left"]);
    assert!(got.iter().all(|e| e.room_id == room));
    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids rise: {got:?}");
    assert_eq!(got[0].data["status"], "waiting");
    assert_eq!(got[1].data["userId"], "alice");
    assert_eq!(got[2].data["userId"], "bob");
    assert_eq!(got[3].data["userId"], "bob");
    assert_eq!(got[3].data["peerId"], bob.peer_id);
    assert!(got[3].data["reason"].is_string());
    assert!(got[0].timestamp.ends_with('Z') && got[0].timestamp.contains('T'), "RFC 3339: {}", got[0].timestamp);
    // Marked once the broker had them: wait for the mark, bounded.
    let mut marked = Vec::new();
    for _ in 0..100 {
        marked = s.app().store.published_events(&room).await.expect("published");
        if marked.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<&str> = marked.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, got.iter().map(|e| e.id.as_str()).collect::<Vec<_>>());
}

#[tokio::test]
async fn outbox_events_reach_the_embedded_broker() {
    let s = TestServer::start().await;
    let url = s.app().bus.url().to_owned();
    assert!(url.starts_with("mqtt://127.0.0.1:"), "embedded broker on loopback: {url}");
    let mut events = Events::subscribe(&url, "default").await;
    a_short_call_is_published(&s, &mut events).await;
}

#[tokio::test]
async fn outbox_events_reach_mosquitto() {
    let Ok(url) = std::env::var("SWITCHBOARD_TEST_MQTT_URL") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (outbox_events_reach_mosquitto): needs an MQTT broker; set SWITCHBOARD_TEST_MQTT_URL"
        );
        return;
    };
    // A cluster name of its own: the broker is shared with other tests and runs.
    let cluster = format!("it-{:08x}", rand::random::<u32>());
    let name = cluster.clone();
    let broker = url.clone();
    let s = TestServer::start_with(move |c| {
        c.bus.mqtt_url = Some(broker);
        c.bus.cluster_name = name;
    })
    .await;
    let mut events = Events::subscribe(&url, &cluster).await;
    a_short_call_is_published(&s, &mut events).await;
}

/// A TCP relay the test can cut: the node's way to the broker.
struct Relay {
    addr: SocketAddr,
    up: Arc<Mutex<bool>>,
    pipes: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(Mutex::new(true));
        let pipes = Arc::new(Mutex::new(Vec::new()));
        let (up2, pipes2) = (up.clone(), pipes.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*up2.lock().expect("up") {
                    continue; // dropped: the connection is refused in effect
                }
                let pipe = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                pipes2.lock().expect("pipes").push(pipe);
            }
        });
        Relay { addr, up, pipes }
    }

    /// Cuts the node's way to the broker, and waits until the node noticed.
    async fn cut(&self, s: &TestServer) {
        self.set(false);
        for _ in 0..200 {
            if !s.app().bus.is_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(!s.app().bus.is_connected(), "the node noticed the broker is gone");
    }

    fn set(&self, up: bool) {
        *self.up.lock().expect("up") = up;
        if !up {
            for p in self.pipes.lock().expect("pipes").drain(..) {
                p.abort();
            }
        }
    }
}

#[tokio::test]
async fn events_wait_while_the_broker_is_unreachable_and_go_out_when_it_returns() {
    let broker = EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).await.expect("broker");
    let relay = Relay::start(broker.addr()).await;
    let via = format!("mqtt://{}", relay.addr);
    let s = TestServer::start_with(move |c| c.bus.mqtt_url = Some(via)).await;
    let mut events = Events::subscribe(&broker.url(), "default").await;
    assert!(s.app().bus.wait_connected(WAIT).await);

    relay.cut(&s).await;
    let room = "bus-outage";
    let (_alice, _) = s.joined("alice", room).await;
    // Written, and not published: nothing can have acknowledged them.
    assert_eq!(s.app().store.events(room).await.expect("events").len(), 2);
    assert!(s.app().store.published_events(room).await.expect("published").is_empty());
    assert!(s.app().store.outbox_backlog().await.expect("backlog") >= 2);

    relay.set(true);
    let got = events.take(2).await;
    assert_eq!(got.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["session.created", "participant.joined"]);
    assert!(s.app().bus.is_connected());
    broker.stop().await;
}

/// Snapshot jobs compared by CV workers on the bus wait while the broker is unreachable (the
/// baseline, which needs no comparison, does not) and finish, once, when it returns.
#[tokio::test]
async fn snapshot_jobs_wait_while_the_broker_is_unreachable_and_finish_when_it_returns() {
    use base64::Engine;
    let broker = EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).await.expect("broker");
    let relay = Relay::start(broker.addr()).await;
    let via = format!("mqtt://{}", relay.addr);
    let s = TestServer::start_with(move |c| {
        c.bus.mqtt_url = Some(via);
        c.snapshots.cv = "bus".into();
        c.snapshots.cv_timeout = Duration::from_millis(500);
    })
    .await;
    assert!(s.app().bus.wait_connected(WAIT).await);
    let room = "cv-outage";
    let (mut alice, _) = s.joined("alice", room).await;
    let token = s.token(json!({"userId": "alice"})).await;
    let post = |changed: bool| {
        let image =
            base64::engine::general_purpose::STANDARD.encode(switchboard::bench::cv::synthetic_png(96, 64, changed));
        s.http
            .post(s.url(&format!("/rooms/{room}/snapshots")))
            .bearer_auth(&token)
            .json(&json!({"image": image, "subject": "desk"}))
            .send()
    };
    relay.cut(&s).await;
    assert_eq!(post(false).await.expect("post").status(), 202);
    assert_eq!(alice.recv_type("snapshot_ready").await["verdict"], "baseline");
    let resp = post(true).await.expect("post");
    let job_id = resp.json::<serde_json::Value>().await.expect("json")["jobId"].as_str().expect("id").to_owned();
    // Tried, not finished: no worker can be reached.
    let mut job = None;
    for _ in 0..400 {
        let j = s.app().store.snapshot_job(&job_id).await.expect("db").expect("job");
        if j.attempts >= 1 && j.last_error.is_some() {
            job = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let job = job.expect("an attempt failed while the broker was away");
    assert_ne!(job.state, "reported");

    relay.set(true);
    let ready = alice.recv_type("snapshot_ready").await;
    assert_eq!((ready["jobId"].as_str(), ready["verdict"].as_str()), (Some(job_id.as_str()), Some("changed")));
    let reports = s.app().store.room_reports(room).await.expect("reports");
    assert_eq!(reports.iter().filter(|r| r["jobId"] == job_id.as_str()).count(), 1, "once");
    broker.stop().await;
}

#[tokio::test]
async fn a_subscription_comes_back_after_the_broker_restarts() {
    let broker = EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).await.expect("broker");
    let addr = broker.addr();
    let mut events = Events::subscribe(&broker.url(), "restart").await;
    broker.stop().await;
    for _ in 0..200 {
        if !events.bus.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!events.bus.is_connected());
    let broker = EmbeddedBroker::start(addr).await.expect("broker restarts on its port");
    assert!(events.bus.wait_connected(WAIT).await, "reconnected after backoff");
    // The broker lost every session; only a renewed subscription gets the probe back.
    events.probe().await;
    broker.stop().await;
}

/// Two real nodes on one PostgreSQL database, one broker: the lease holder is killed with
/// events still to publish; the other publishes every event, each id at least once, in id
/// order per room by first arrival, and marks each exactly once.
#[tokio::test]
async fn another_node_takes_over_publishing_when_the_publisher_dies() {
    let Some(db) = fresh_postgres("another_node_takes_over_publishing_when_the_publisher_dies").await else {
        return;
    };
    let broker = EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr")).await.expect("broker");
    let mut events = Events::subscribe(&broker.url(), "failover").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bus.toml");
    std::fs::write(&config, "[bus]\ncluster_name = \"failover\"\npublisher_lease_ttl = \"1s\"\n").expect("config");
    let config = config.to_str().expect("utf-8 path").to_owned();
    let url = broker.url();
    let spawn = |id: &str| {
        let data = dir.path().join(id);
        Node::spawn(&data, &["--node-id", id, "--database-url", &db, "--mqtt-url", &url, "--config", &config])
    };
    let mut nodes = [spawn("pub-a"), spawn("pub-b")];
    let store = Store::open(&db, 2, "observer").await.expect("store");
    let mut holder = None;
    for _ in 0..200 {
        holder = store.service_lease_holder(LEASE).await.expect("holder");
        if holder.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (holder, _) = holder.expect("one node publishes");
    let dying = usize::from(holder != "pub-a");
    let survivor = 1 - dying;
    // Traffic on both nodes: each join writes events.
    let mut clients = Vec::new();
    for i in 0..8 {
        let node = nodes[i % 2].addr;
        let token = node_token(node, &format!("u{i}")).await;
        let mut c = crate::support::Client::connect(node, &token).await;
        c.send(json!({"type": "join", "roomId": format!("fo-{i}")})).await;
        c.recv_type("joined").await;
        clients.push(c);
    }
    nodes[dying].kill();
    // More events after the death, on the survivor.
    for n in 0..4 {
        let token = node_token(nodes[survivor].addr, &format!("late-{n}")).await;
        let mut c = crate::support::Client::connect(nodes[survivor].addr, &token).await;
        c.send(json!({"type": "join", "roomId": format!("late-{n}")})).await;
        c.recv_type("joined").await;
        clients.push(c);
    }
    // Every event in the outbox gets published and marked, bounded by time.
    let mut backlog = -1;
    for _ in 0..400 {
        backlog = store.outbox_backlog().await.expect("backlog");
        if backlog == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(backlog, 0, "the survivor published the rest");
    let (holder, _) = store.service_lease_holder(LEASE).await.expect("holder").expect("a holder");
    assert_eq!(holder, ["pub-a", "pub-b"][survivor]);
    // What the broker carried: every event, first arrivals in id order per room.
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let mut total = 0;
    for r in (0..8).map(|i| format!("fo-{i}")).chain((0..4).map(|i| format!("late-{i}"))) {
        let ids: Vec<String> = store.events(&r).await.expect("events").into_iter().map(|e| e.id).collect();
        total += ids.len();
        expected.insert(r, ids);
    }
    let mut seen = HashSet::new();
    let mut first: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < total {
        let Ok(Some(d)) = tokio::time::timeout_at(deadline, events.rx.recv()).await else {
            panic!("{} of {total} events arrived", seen.len());
        };
        if d.topic.ends_with("/test.probe") {
            continue;
        }
        let e: Envelope = serde_json::from_slice(&d.payload).expect("envelope");
        if seen.insert(e.id.clone()) {
            first.entry(e.room_id).or_default().push(e.id);
        }
    }
    assert_eq!(first, expected, "every event, in order per room");
    store.close().await;
    broker.stop().await;
}
