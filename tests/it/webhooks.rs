//! Webhooks: endpoints registered through the admin API get every later event, signed per
//! Standard Webhooks (checked here and, when Python's `standardwebhooks` is installed, by the
//! specification's reference library), in event order; a failed delivery is retried with the
//! same `webhook-id` before the next goes; a delivery whose retry window closes is
//! dead-lettered; `410 Gone` disables the endpoint.

use crate::support::{TestServer, WAIT};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard::webhooks::signing;
use tokio::sync::mpsc;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

impl Received {
    fn kind(&self) -> String {
        serde_json::from_str::<Value>(&self.body).expect("json body")["type"].as_str().expect("type").to_owned()
    }
}

/// An HTTP endpoint on loopback that answers by the event's kind (200 unless told otherwise).
struct Receiver {
    url: String,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start(answer: fn(&str, usize) -> u16) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(Mutex::new(0usize));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (tx, count) = (tx.clone(), count.clone());
                async move {
                    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let kind = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["type"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let n = {
                        let mut c = count.lock().expect("count");
                        *c += 1;
                        *c
                    };
                    let answered = answer(&kind, n);
                    let _ = tx.send(Received {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body,
                        answered,
                    });
                    StatusCode::from_u16(answered).expect("status")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, rx }
    }

    /// The next `n` requests, bounded by time.
    async fn take(&mut self, n: usize) -> Vec<Received> {
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout(WAIT, self.rx.recv()).await {
                Ok(Some(r)) => out.push(r),
                _ => panic!("{} of {n} webhook requests arrived: {out:?}", out.len()),
            }
        }
        out
    }
}

/// A node that retries quickly, so the tests need not wait for production's delays.
async fn quick_server() -> TestServer {
    TestServer::start_with(|c| {
        c.webhooks.poll_interval = Duration::from_millis(20);
        c.webhooks.retry_base = Duration::from_millis(40);
        c.webhooks.retry_max = Duration::from_millis(200);
    })
    .await
}

async fn admin(s: &TestServer) -> String {
    s.token(json!({"userId": "ops", "grants": {"admin": true}})).await
}

async fn register(s: &TestServer, token: &str, body: Value) -> Value {
    let resp = s.http.post(s.url("/api/webhooks")).bearer_auth(token).json(&body).send().await.expect("post");
    assert_eq!(resp.status(), 201, "registration of {body}");
    resp.json().await.expect("json")
}

async fn deliveries(s: &TestServer, token: &str, id: &str) -> Vec<Value> {
    let v: Value = s
        .http
        .get(s.url(&format!("/api/webhooks/{id}/deliveries")))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    v["deliveries"].as_array().expect("deliveries").clone()
}

/// Verifies with the specification's Python library when it is installed.
fn reference_library_accepts(secret: &str, r: &Received) -> Option<bool> {
    let script = "import sys, standardwebhooks\n\
                  w = standardwebhooks.Webhook(sys.argv[1])\n\
                  w.verify(sys.stdin.read(), {'webhook-id': sys.argv[2], 'webhook-timestamp': sys.argv[3], 'webhook-signature': sys.argv[4]})\n";
    let probe = std::process::Command::new("python3").args(["-c", "import standardwebhooks"]).output().ok()?;
    if !probe.status.success() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: Python's standardwebhooks is not installed; signatures checked here only"
        );
        return None;
    }
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, &r.id, &r.timestamp, &r.signature])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(r.body.as_bytes()).ok()?;
    Some(child.wait().ok()?.success())
}

#[tokio::test]
async fn webhooks_are_signed_in_order_and_visible_to_operators() {
    let s = quick_server().await;
    let mut hook = Receiver::start(|_, _| 200).await;
    let token = admin(&s).await;
    // Only operators may register.
    let anyone = s.token(json!({"userId": "mallory"})).await;
    let refused = s.http.post(s.url("/api/webhooks")).bearer_auth(&anyone).json(&json!({"url": hook.url})).send();
    assert_eq!(refused.await.expect("post").status(), 403);
    let bare = s.http.get(s.url("/api/webhooks")).send().await.expect("get");
    assert_eq!(bare.status(), 401);
    let bad = s.http.post(s.url("/api/webhooks")).bearer_auth(&token).json(&json!({"url": "ftp://x"})).send();
    assert_eq!(bad.await.expect("post").status(), 400);
    let bad = s.http.post(s.url("/api/webhooks")).bearer_auth(&token);
    let bad = bad.json(&json!({"url": hook.url, "events": ["no.such"]})).send().await.expect("post");
    assert_eq!(bad.status(), 400);

    let created = register(&s, &token, json!({"url": hook.url})).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));

    let (_alice, _) = s.joined("alice", "hooked").await;
    let (_bob, _) = s.joined("bob", "hooked").await;
    let got = hook.take(3).await;
    assert_eq!(
        got.iter().map(Received::kind).collect::<Vec<_>>(),
        ["session.created", "participant.joined", "participant.joined"]
    );
    let key = signing::key_of(&secret).expect("key");
    for r in &got {
        let body: Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(r.id, body["id"].as_str().expect("id"), "webhook-id is the event id");
        let ts: i64 = r.timestamp.parse().expect("unix seconds");
        assert!((ts - switchboard_actors::ports::now_ms() / 1000).abs() < 60);
        assert!(r.signature.starts_with("v1,"));
        assert!(signing::verify(&key, &r.id, ts, r.body.as_bytes(), &r.signature), "signature of {r:?}");
        assert!(!signing::verify(&key, &r.id, ts + 1, r.body.as_bytes(), &r.signature));
        if let Some(ok) = reference_library_accepts(&secret, r) {
            assert!(ok, "the reference library rejected {r:?}");
        }
    }

    // Operators see the endpoint (never its secret) and every attempt.
    let listed: Value =
        s.http.get(s.url("/api/webhooks")).bearer_auth(&token).send().await.expect("get").json().await.expect("json");
    assert_eq!(listed["endpoints"][0]["id"], id.as_str());
    assert!(!listed.to_string().contains(&secret), "secrets are not listed");
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = deliveries(&s, &token, &id).await;
        if seen.len() == 3 && seen.iter().all(|d| d["status"] == "delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.iter().all(|d| d["status"] == "delivered" && d["attempts"] == 1), "{seen:?}");
    assert_eq!(seen[0]["attemptLog"][0]["statusCode"], 200);

    let gone = s.http.delete(s.url(&format!("/api/webhooks/{id}"))).bearer_auth(&token).send().await.expect("delete");
    assert_eq!(gone.status(), 204);
    let missing = s.http.get(s.url(&format!("/api/webhooks/{id}"))).bearer_auth(&token).send().await.expect("get");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_before_the_next_goes() {
    retried_in_order(&quick_server().await).await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_before_the_next_goes_on_postgres() {
    let Some(db) =
        crate::support::fresh_postgres("a_failed_delivery_is_retried_before_the_next_goes_on_postgres").await
    else {
        return;
    };
    let s = TestServer::start_with(move |c| {
        c.database.url = Some(db);
        c.webhooks.poll_interval = Duration::from_millis(20);
        c.webhooks.retry_base = Duration::from_millis(40);
        c.webhooks.retry_max = Duration::from_millis(200);
    })
    .await;
    retried_in_order(&s).await;
}

async fn retried_in_order(s: &TestServer) {
    // The first request fails; everything after succeeds.
    let mut hook = Receiver::start(|_, n| if n == 1 { 500 } else { 200 }).await;
    let token = admin(s).await;
    let created =
        register(s, &token, json!({"url": hook.url, "events": ["session.created", "participant.joined"]})).await;
    let (_alice, _) = s.joined("alice", "retried").await;
    let got = hook.take(3).await;
    assert_eq!((got[0].answered, got[1].answered, got[2].answered), (500, 200, 200));
    assert_eq!(got[0].id, got[1].id, "the retry carries the same webhook-id");
    assert_eq!(got[1].kind(), "session.created");
    assert_eq!(got[2].kind(), "participant.joined", "the next event waited for the retry");
    let id = created["id"].as_str().expect("id");
    let mut first = json!(null);
    for _ in 0..100 {
        let seen = deliveries(s, &token, id).await;
        if let Some(d) = seen.iter().find(|d| d["eventType"] == "session.created" && d["status"] == "delivered") {
            first = d.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first["attempts"], 2, "{first}");
    assert_eq!(first["attemptLog"][0]["statusCode"], 500);
    assert_eq!(first["attemptLog"][1]["statusCode"], 200);
}

#[tokio::test]
async fn a_delivery_past_its_retry_window_is_dead_lettered_and_the_next_goes() {
    let s = TestServer::start_with(|c| {
        c.webhooks.poll_interval = Duration::from_millis(20);
        c.webhooks.retry_base = Duration::from_millis(40);
        c.webhooks.retry_max = Duration::from_millis(80);
        c.webhooks.retry_for = Duration::from_millis(300);
    })
    .await;
    let mut hook = Receiver::start(|kind, _| if kind == "session.created" { 500 } else { 200 }).await;
    let token = admin(&s).await;
    let created = register(&s, &token, json!({"url": hook.url})).await;
    let (_alice, _) = s.joined("alice", "dead-letter").await;
    let mut requests = Vec::new();
    for _ in 0..200 {
        let r = hook.take(1).await.remove(0);
        let done = r.kind() == "participant.joined";
        requests.push(r);
        if done {
            break;
        }
    }
    let failed = requests.iter().filter(|r| r.kind() == "session.created").count();
    assert!(failed >= 2, "retried before giving up: {requests:?}");
    assert_eq!(requests.last().map(Received::kind).as_deref(), Some("participant.joined"));
    let seen = deliveries(&s, &token, created["id"].as_str().expect("id")).await;
    let dead = seen.iter().find(|d| d["eventType"] == "session.created").expect("the dead letter");
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["attempts"].as_i64(), Some(failed as i64));
    assert!(dead["finishedAt"].is_i64());
}

#[tokio::test]
async fn a_410_disables_the_endpoint() {
    let s = quick_server().await;
    let mut gone = Receiver::start(|_, _| 410).await;
    let mut live = Receiver::start(|_, _| 200).await;
    let token = admin(&s).await;
    let created = register(&s, &token, json!({"url": gone.url})).await;
    register(&s, &token, json!({"url": live.url})).await;
    let (_alice, _) = s.joined("alice", "gone").await;
    assert_eq!(gone.take(1).await[0].answered, 410);
    live.take(2).await;
    let id = created["id"].as_str().expect("id");
    let endpoint: Value = s
        .http
        .get(s.url(&format!("/api/webhooks/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(endpoint["disabledAt"].is_i64(), "{endpoint}");
    assert_eq!(endpoint["disabledReason"], "410 Gone");
    // Later events reach the live endpoint and not the disabled one.
    let (_bob, _) = s.joined("bob", "gone").await;
    let later = live.take(1).await;
    assert_eq!(later[0].kind(), "participant.joined");
    assert!(gone.rx.try_recv().is_err(), "nothing more was sent to a 410 endpoint");
}
