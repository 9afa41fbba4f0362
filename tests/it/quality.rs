//! Audio-only fallback driven by scripted `stats`: a peer whose quality stays poor is told to
//! fall back and the others see its video paused; it gets video back only after quality has
//! been good for long enough. A break in a run restarts the clock (no flapping).

use crate::support::{Client, TestServer};
use serde_json::{Value, json};

fn stats(t: f64, rtt_ms: f64, loss: f64, kbps: f64) -> Value {
    json!({"type": "stats", "timestamp": t, "roundTripTime": rtt_ms / 1000.0, "fractionLost": loss,
           "jitter": 0.005, "availableOutgoingBitrate": kbps * 1000.0})
}

fn poor(t: f64) -> Value {
    stats(t, 400.0, 0.2, 80.0)
}

fn fair(t: f64) -> Value {
    stats(t, 40.0, 0.03, 200.0)
}

fn good(t: f64) -> Value {
    stats(t, 40.0, 0.0, 2000.0)
}

/// Sends a sample and reads the sender's next frame, which must be its quality report.
async fn sample(alice: &mut Client, v: Value, level: &str) {
    alice.send(v).await;
    let q = alice.recv().await;
    assert_eq!(q["type"], "connection_quality", "{q}");
    assert_eq!(q["level"], level, "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poor_quality_falls_back_to_audio_and_recovers_with_hysteresis() {
    let mut s = TestServer::start().await;
    let (mut alice, joined) = s.joined("alice", "quality-room").await;
    let call_id = joined["callId"].as_str().expect("call id").to_owned();
    let (mut bob, _) = s.joined("bob", "quality-room").await;
    alice.recv_type("peer_joined").await;
    alice.recv_type("call_status").await;

    let t0 = 1_800_000_000_000.0;
    sample(&mut alice, good(t0), "good").await;
    let seen = bob.recv_type("connection_quality").await;
    assert_eq!((seen["peerId"].as_str(), seen["level"].as_str()), (Some(alice.peer_id.as_str()), Some("good")));
    assert!(seen["score"].as_f64().is_some_and(|r| r > 90.0), "{seen}");

    // Poor for 3 s, one fair sample, poor again: no fallback yet (each next frame is a report).
    for k in 1..=4 {
        sample(&mut alice, poor(t0 + k as f64 * 1000.0), "poor").await;
    }
    sample(&mut alice, fair(t0 + 4500.0), "fair").await;
    for k in 5..=8 {
        sample(&mut alice, poor(t0 + k as f64 * 1000.0), "poor").await;
    }
    // Poor for 4 s without a break: fallback.
    sample(&mut alice, poor(t0 + 9000.0), "poor").await;
    let f = alice.recv().await;
    assert_eq!((f["type"].as_str(), f["mode"].as_str()), (Some("fallback"), Some("audio_only")), "{f}");
    let paused = bob.recv_type("video_paused").await;
    assert_eq!((paused["peerId"].as_str(), paused["paused"].as_bool()), (Some(alice.peer_id.as_str()), Some(true)));

    // A late joiner sees the paused video.
    let (_carol, joined) = s.joined("carol", "quality-room").await;
    let alice_info = joined["participants"].as_array().expect("list").iter().find(|p| p["userId"] == "alice").cloned();
    assert_eq!(alice_info.expect("alice")["media"]["videoPaused"], true);
    alice.recv_type("peer_joined").await;

    // Fair for 20 s is not enough to get video back; good for 10 s is.
    for k in 10..30 {
        sample(&mut alice, fair(t0 + k as f64 * 1000.0), "fair").await;
    }
    for k in 30..40 {
        sample(&mut alice, good(t0 + k as f64 * 1000.0), "good").await;
    }
    sample(&mut alice, good(t0 + 40_000.0), "good").await;
    let f = alice.recv().await;
    assert_eq!((f["type"].as_str(), f["mode"].as_str()), (Some("fallback"), Some("normal")), "{f}");
    let resumed = bob.recv_type("video_paused").await;
    assert_eq!(resumed["paused"], false);

    // Bad samples are refused with a reason.
    alice.send(json!({"type": "stats", "roundTripTime": 0.1})).await;
    assert_eq!(alice.recv_type("error").await["code"], "invalid_message");
    alice.send(stats(t0 + 50_000.0, 40.0, 2.0, 100.0)).await;
    assert_eq!(alice.recv_type("error").await["code"], "invalid_message");
    alice.send(good(t0)).await;
    let e = alice.recv_type("error").await;
    assert!(e["message"].as_str().expect("message").contains("increase"), "{e}");

    let levels = s.app().store.quality_levels(&alice.peer_id).await.expect("levels");
    assert_eq!(levels.len(), 42, "every accepted sample is recorded");
    assert_eq!(levels.iter().filter(|l| *l == "poor").count(), 9);
    // The call's aggregates replay the same samples: one fallback, time at each level.
    let token = s.token(json!({"userId": "alice"})).await;
    let url = s.url(&format!("/rooms/quality-room/calls/{call_id}"));
    let call: Value = s.http.get(&url).bearer_auth(&token).send().await.expect("get").json().await.expect("json");
    assert_eq!(
        (call["samples"].as_u64(), call["peers"].as_u64(), call["fallbacks"].as_u64()),
        (Some(42), Some(1), Some(1)),
        "{call}"
    );
    let (mean, worst) = (call["meanScore"].as_f64().expect("mean"), call["worstScore"].as_f64().expect("worst"));
    assert!(worst < mean && mean < 100.0, "{call}");
    let secs = |level: &str| call["secondsIn"][level].as_f64().expect("seconds");
    assert!(secs("poor") >= 8.0 && secs("fair") >= 20.0 && secs("good") >= 10.0, "{call}");
    let missing = s.http.get(s.url("/rooms/quality-room/calls/nope")).bearer_auth(&token).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    let metrics = s.http.get(s.url("/metrics")).send().await.expect("get").text().await.expect("text");
    assert!(metrics.contains("switchboard_fallbacks_total 1"), "{metrics}");
    assert!(metrics.contains("switchboard_fallback_recoveries_total 1"));
    s.stop().await;
}
