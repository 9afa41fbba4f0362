//! Snapshots to signed evidence, end to end on one node: a participant posts a snapshot, everyone
//! in the room gets `snapshot_ready`, the report is signed and verifiable, the second snapshot
//! of the subject is compared with the first (its baseline) and the change is found where it
//! was drawn, reports chain, artifacts come back by CID, `switchboard verify-report` passes,
//! and bad input (foreign and corrupt images, strangers, repeated requests) is handled.

use crate::support::{Moto, TestServer, verify_report};
use base64::Engine;
use serde_json::{Value, json};
use switchboard::bench::cv::synthetic_png;
use switchboard::evidence::cid::cid_of;
use switchboard::evidence::report::{parse_key_set, report_hash, verify_chain, verify_signature};

async fn post_snapshot(s: &TestServer, token: &str, room: &str, png: &[u8], key: Option<&str>) -> reqwest::Response {
    let image = base64::engine::general_purpose::STANDARD.encode(png);
    let mut req = s.http.post(s.url(&format!("/rooms/{room}/snapshots"))).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.json(&json!({"image": image, "subject": "bob-camera"})).send().await.expect("post")
}

/// The report a `snapshot_ready` names.
async fn report_of(s: &TestServer, token: &str, ready: &Value) -> Value {
    let path = format!("/reports/{}", ready["reportId"].as_str().expect("reportId"));
    get_as(s, token, &path).await.json().await.expect("json")
}

async fn get_as(s: &TestServer, token: &str, path: &str) -> reqwest::Response {
    s.http.get(s.url(path)).bearer_auth(token).send().await.expect("get")
}

#[tokio::test]
async fn a_snapshot_becomes_a_signed_report_that_anyone_can_verify() {
    let s = TestServer::start().await;
    let room = "evidence";
    let (mut alice, _) = s.joined("alice", room).await;
    let (mut bob, _) = s.joined("bob", room).await;
    let token = s.token(json!({"userId": "alice"})).await;

    // The first snapshot of the subject is its baseline.
    let baseline_png = synthetic_png(640, 360, false);
    let resp = post_snapshot(&s, &token, room, &baseline_png, None).await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.expect("json");
    let job_id = job["jobId"].as_str().expect("jobId").to_owned();
    let ready = alice.recv_type("snapshot_ready").await;
    assert_eq!(bob.recv_type("snapshot_ready").await["reportId"], ready["reportId"], "everyone is told");
    assert_eq!((ready["jobId"].as_str(), ready["verdict"].as_str()), (Some(job_id.as_str()), Some("baseline")));
    let first: Value = report_of(&s, &token, &ready).await;
    assert_eq!(first["verdict"], "baseline");
    assert_eq!(first["snapshotCid"], cid_of(&baseline_png));
    assert!(first["prevReportHash"].is_null());
    let state: Value = get_as(&s, &token, &format!("/snapshots/{job_id}")).await.json().await.expect("json");
    assert_eq!(state["state"], "reported");

    // The second is compared with it: the box drawn into it is found where it is.
    let changed_png = synthetic_png(640, 360, true);
    let resp = post_snapshot(&s, &token, room, &changed_png, Some("second")).await;
    assert_eq!(resp.status(), 202);
    let again = post_snapshot(&s, &token, room, &changed_png, Some("second")).await;
    let (one, two): (Value, Value) = (resp.json().await.expect("json"), again.json().await.expect("json"));
    assert_eq!(one["jobId"], two["jobId"], "an Idempotency-Key makes one job");
    let ready = alice.recv_type("snapshot_ready").await;
    assert_eq!(ready["verdict"], "changed");
    let second: Value = report_of(&s, &token, &ready).await;
    assert_eq!(second["baselineCid"], cid_of(&baseline_png));
    assert_eq!(second["prevReportHash"], report_hash(&first).expect("hash"));
    let region = &second["regions"][0];
    let (x, w) = (region["x"].as_u64().expect("x"), region["width"].as_u64().expect("w"));
    let (y, h) = (region["y"].as_u64().expect("y"), region["height"].as_u64().expect("h"));
    // synthetic_png draws the box at x 320..400, y 90..150 of 640×360.
    assert!((320..400).contains(&(x + w / 2)) && (90..150).contains(&(y + h / 2)), "{region}");
    assert!(second["score"].as_f64().expect("score") < 1.0);
    assert_eq!(second["algorithm"]["ssim"]["window"], 11);
    // Taken during the room's call: the report carries the call's quality so far.
    assert!(second["callQuality"]["callId"].is_string(), "{second}");

    // Operators see the steps.
    let metrics = s.http.get(s.url("/metrics")).send().await.expect("get").text().await.expect("text");
    for name in ["switchboard_snapshot_jobs_total{outcome=\"reported\"}", "switchboard_cv_compare_seconds"] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }

    // Artifacts come back by CID; the heatmap is a PNG.
    let heatmap = get_as(&s, &token, &format!("/evidence/{}", second["heatmapCid"].as_str().expect("cid"))).await;
    assert_eq!(heatmap.headers()["content-type"], "image/png");
    let bytes = heatmap.bytes().await.expect("bytes");
    assert_eq!(cid_of(&bytes), second["heatmapCid"].as_str().expect("cid"));
    let stranger = s.token(json!({"userId": "mallory"})).await;
    let refused = get_as(&s, &stranger, &format!("/evidence/{}", second["snapshotCid"].as_str().expect("cid"))).await;
    assert_eq!(refused.status(), 403);

    // The signature and the chain verify with the published keys; a changed byte does not.
    let keys: Value =
        s.http.get(s.url("/.well-known/switchboard-keys.json")).send().await.expect("get").json().await.expect("json");
    let keys = parse_key_set(&keys).expect("key set");
    verify_signature(&second, &keys).expect("signature");
    let chain: Value = get_as(&s, &token, &format!("/rooms/{room}/reports")).await.json().await.expect("json");
    let chain = chain["reports"].as_array().expect("reports").clone();
    assert_eq!(chain.len(), 2);
    verify_chain(&chain).expect("chain");
    let mut tampered = second.clone();
    tampered["verdict"] = json!("unchanged");
    assert!(verify_signature(&tampered, &keys).is_err());

    // And the command does all of it against the node.
    let url = s.url(&format!("/reports/{}", second["reportId"].as_str().expect("id")));
    let (passed, text) = verify_report(&[&url, "--token", &token]).await;
    assert!(passed, "verify-report: {text}");
    assert!(
        text.contains("integrity: ok (3 artifacts") && text.contains("signature: ok") && text.contains("chain:     ok"),
        "{text}"
    );
    // An artifact altered in the evidence store fails the integrity check.
    let heat_cid = second["heatmapCid"].as_str().expect("cid");
    let stored = s.dir.path().join("evidence").join(&heat_cid[heat_cid.len() - 2..]).join(heat_cid);
    std::fs::write(&stored, b"not the heatmap that was signed").expect("alter the artifact");
    let (passed, text) = verify_report(&[&url, "--token", &token]).await;
    assert!(!passed, "{text}");
    assert!(text.contains("integrity: FAILED") && text.contains("signature: ok"), "{text}");
    // A report file that was altered fails offline.
    let dir = tempfile::tempdir().expect("dir");
    let (file, key_file) = (dir.path().join("report.json"), dir.path().join("keys.json"));
    std::fs::write(&file, tampered.to_string()).expect("write");
    let key_doc =
        s.http.get(s.url("/.well-known/switchboard-keys.json")).send().await.expect("get").text().await.expect("text");
    std::fs::write(&key_file, key_doc).expect("write");
    let (passed, text) =
        verify_report(&[file.to_str().expect("path"), "--key-set", key_file.to_str().expect("path")]).await;
    assert!(!passed && text.contains("signature: FAILED"), "{text}");
}

#[tokio::test]
async fn bad_snapshots_are_refused_with_a_code() {
    let s = TestServer::start().await;
    let room = "bad-snapshots";
    let (_alice, _) = s.joined("alice", room).await;
    let token = s.token(json!({"userId": "alice"})).await;
    let code = |v: Value| v["code"].as_str().unwrap_or_default().to_owned();

    let resp = post_snapshot(&s, &token, room, b"GIF89a not what we take", None).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(code(resp.json().await.expect("json")), "unsupported_image");
    let mut truncated = synthetic_png(64, 64, false);
    truncated.truncate(truncated.len() / 2);
    let resp = post_snapshot(&s, &token, room, &truncated, None).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(code(resp.json().await.expect("json")), "corrupt_image");
    let resp = s
        .http
        .post(s.url(&format!("/rooms/{room}/snapshots")))
        .bearer_auth(&token)
        .json(&json!({"image": "!!!", "subject": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let stranger = s.token(json!({"userId": "mallory"})).await;
    let resp = post_snapshot(&s, &stranger, room, &synthetic_png(64, 64, false), None).await;
    assert_eq!(resp.status(), 403);
    let (_viewer, _) = s.joined("viewer", room).await;
    let no_grant = s.token(json!({"userId": "viewer", "grants": {"snapshot": false}})).await;
    let resp = post_snapshot(&s, &no_grant, room, &synthetic_png(64, 64, false), None).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(code(resp.json().await.expect("json")), "snapshot_not_granted");
    let resp = s.http.post(s.url(&format!("/rooms/{room}/snapshots"))).send().await.expect("post");
    assert_eq!(resp.status(), 401);

    // Multipart works too, and the node keeps serving.
    let form = reqwest::multipart::Form::new()
        .text("subject", "door")
        .part("image", reqwest::multipart::Part::bytes(synthetic_png(64, 64, false)).file_name("door.png"));
    let resp = s
        .http
        .post(s.url(&format!("/rooms/{room}/snapshots")))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.expect("json");
    let path = format!("/snapshots/{}", job["jobId"].as_str().expect("id"));
    let mut state = Value::Null;
    for _ in 0..200 {
        state = get_as(&s, &token, &path).await.json().await.expect("json");
        if state["state"] == "reported" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(state["state"], "reported", "{state}");
}

/// A worker that dies holding a job (its claim left behind): another worker takes the job over
/// once the claim is stale, finishes it, and the dead claim can write nothing more.
#[tokio::test]
async fn a_job_whose_worker_died_is_taken_over_and_reported_once() {
    use std::time::Duration;
    use switchboard::snapshots::{SnapshotWorker, WorkerSettings};
    let s = TestServer::start_with(|c| c.snapshots.work = false).await;
    let room = "takeover";
    let (mut alice, _) = s.joined("alice", room).await;
    let token = s.token(json!({"userId": "alice"})).await;
    let resp = post_snapshot(&s, &token, room, &synthetic_png(64, 64, false), None).await;
    assert_eq!(resp.status(), 202);
    let job_id = resp.json::<Value>().await.expect("json")["jobId"].as_str().expect("id").to_owned();
    let app = s.app().clone();
    let node = app.config.node_id.clone();
    // The worker that is about to die claims it.
    let dead = app.store.claim_snapshot_job(&node, 60_000, false).await.expect("db").expect("claimed");
    assert_eq!((dead.id.as_str(), dead.state.as_str(), dead.attempts), (job_id.as_str(), "dispatched", 1));
    // A live worker takes it over once the claim is older than its stale limit.
    let settings = WorkerSettings { stale_after: Duration::from_millis(300), ..WorkerSettings::default() };
    let worker = SnapshotWorker::spawn(app.clone(), app.snapshot_wake.clone(), settings).await.expect("worker");
    let ready = alice.recv_type("snapshot_ready").await;
    assert_eq!(ready["jobId"], job_id.as_str());
    let job = app.store.snapshot_job(&job_id).await.expect("db").expect("job");
    assert_eq!((job.state.as_str(), job.attempts), ("reported", 2));
    // The dead claim comes back to life: it may not write a second report.
    let late = app
        .store
        .finish_snapshot_job(&dead, &node, |_| Err("never called for a stale claim".into()))
        .await
        .expect("db");
    assert!(late.is_none());
    assert_eq!(app.store.room_reports(room).await.expect("reports").len(), 1, "exactly one report");
    worker.stop().await;
}

/// A `switchboard cv-worker` process as a test starts it.
struct CvWorker(std::process::Child);

impl CvWorker {
    fn start(mqtt_url: &str, cluster: &str) -> CvWorker {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["cv-worker", "--mqtt-url", mqtt_url, "--cluster", cluster])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn cv-worker");
        CvWorker(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for CvWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Comparisons made by a separate `switchboard cv-worker` process through the bus: a job waits
/// while no worker answers (the worker was killed) and completes, once, when one is back.
#[tokio::test]
async fn comparisons_go_to_cv_worker_processes_on_the_bus() {
    cv_workers_on_the_bus(None).await;
}

#[tokio::test]
async fn comparisons_go_to_cv_worker_processes_through_mosquitto() {
    let Ok(url) = std::env::var("SWITCHBOARD_TEST_MQTT_URL") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (comparisons_go_to_cv_worker_processes_through_mosquitto): set SWITCHBOARD_TEST_MQTT_URL"
        );
        return;
    };
    cv_workers_on_the_bus(Some(url)).await;
}

/// On the node's embedded broker, or on `broker` (with a cluster name of its own: the broker is
/// shared with other runs).
async fn cv_workers_on_the_bus(broker: Option<String>) {
    use std::time::Duration;
    let cluster = match &broker {
        Some(_) => format!("it-cv-{:08x}", rand::random::<u32>()),
        None => "default".to_owned(),
    };
    let (url, name) = (broker.clone(), cluster.clone());
    let s = TestServer::start_with(move |c| {
        c.snapshots.cv = "bus".into();
        c.snapshots.local_cv_workers = 0;
        c.snapshots.cv_timeout = Duration::from_millis(800);
        c.bus.mqtt_url = url;
        c.bus.cluster_name = name;
    })
    .await;
    let mqtt = s.app().bus.url().to_owned();
    let room = "bus-cv";
    let (mut alice, _) = s.joined("alice", room).await;
    let token = s.token(json!({"userId": "alice"})).await;
    let mut worker = CvWorker::start(&mqtt, &cluster);

    assert_eq!(post_snapshot(&s, &token, room, &synthetic_png(320, 180, false), None).await.status(), 202);
    assert_eq!(alice.recv_type("snapshot_ready").await["verdict"], "baseline");
    assert_eq!(post_snapshot(&s, &token, room, &synthetic_png(320, 180, true), None).await.status(), 202);
    let ready = alice.recv_type("snapshot_ready").await;
    assert_eq!(ready["verdict"], "changed", "{ready}");
    let report: Value = report_of(&s, &token, &ready).await;
    assert_eq!(report["algorithm"]["name"], "ssim-gaussian-regions");
    assert!(report["heatmapCid"].is_string());

    // No worker: the job waits and is asked again; a new worker finishes it, once.
    worker.kill();
    let resp = post_snapshot(&s, &token, room, &synthetic_png(320, 180, true), Some("third")).await;
    let job_id = resp.json::<Value>().await.expect("json")["jobId"].as_str().expect("id").to_owned();
    let path = format!("/snapshots/{job_id}");
    let mut state = Value::Null;
    for _ in 0..200 {
        state = get_as(&s, &token, &path).await.json().await.expect("json");
        if state["attempts"].as_i64().unwrap_or(0) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(state["attempts"].as_i64().unwrap_or(0) >= 2, "retried while no worker answered: {state}");
    assert_ne!(state["state"], "reported");
    let _worker = CvWorker::start(&mqtt, &cluster);
    let ready = alice.recv_type("snapshot_ready").await;
    assert_eq!(ready["jobId"], job_id.as_str());
    let reports = s.app().store.room_reports(room).await.expect("reports");
    assert_eq!(reports.iter().filter(|r| r["jobId"] == job_id.as_str()).count(), 1, "one report for the job");
    assert_eq!(reports.len(), 3);
}

/// Evidence in an S3 bucket: artifacts are written there under their CIDs, once, and served
/// back from there.
#[tokio::test]
async fn evidence_can_live_in_an_s3_bucket() {
    let Some(moto) = Moto::start().await else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (evidence_can_live_in_an_s3_bucket): needs moto_server (pip install \"moto[server]\")"
        );
        return;
    };
    moto.bucket("evidence-test").await;
    let endpoint = moto.url.clone();
    let s = TestServer::start_with(move |c| {
        c.evidence.url = Some("s3://evidence-test/calls".into());
        c.evidence.endpoint = Some(endpoint);
        c.evidence.allow_http = true;
        c.evidence.access_key_id = Some("test".into());
        c.evidence.secret_access_key = Some("test".into());
    })
    .await;
    assert!(s.app().evidence.shared());
    let room = "bucket";
    let (mut alice, _) = s.joined("alice", room).await;
    let token = s.token(json!({"userId": "alice"})).await;
    let png = synthetic_png(160, 90, false);
    assert_eq!(post_snapshot(&s, &token, room, &png, None).await.status(), 202);
    assert_eq!(post_snapshot(&s, &token, room, &synthetic_png(160, 90, true), None).await.status(), 202);
    alice.recv_type("snapshot_ready").await;
    let ready = alice.recv_type("snapshot_ready").await;
    let report: Value = report_of(&s, &token, &ready).await;
    // The objects are in the bucket under their CIDs (read with a client of the test's own).
    use object_store::ObjectStoreExt;
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("evidence-test")
        .with_region("us-east-1")
        .with_endpoint(&moto.url)
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .expect("client");
    for field in ["snapshotCid", "baselineCid", "heatmapCid"] {
        let cid = report[field].as_str().expect("cid");
        let object = bucket.get(&object_store::path::Path::from(format!("calls/{cid}"))).await.expect(field);
        assert_eq!(cid_of(&object.bytes().await.expect("bytes")), cid);
        let served = get_as(&s, &token, &format!("/evidence/{cid}")).await.bytes().await.expect("bytes");
        assert_eq!(cid_of(&served), cid);
    }
    // Written once: the same bytes again are the same CID, no error.
    assert_eq!(s.app().evidence.put(&png).await.expect("put again"), cid_of(&png));
}

/// A configured signing key (one a cluster's nodes may share) signs the reports and is the one
/// the key set lists.
#[tokio::test]
async fn reports_are_signed_with_a_configured_key() {
    use switchboard::evidence::report::NodeKey;
    let keys_dir = tempfile::tempdir().expect("dir");
    let shared = NodeKey::load_or_create(keys_dir.path()).expect("key");
    let path = keys_dir.path().join(switchboard::evidence::report::KEY_FILE);
    let s = TestServer::start_with(move |c| c.evidence.signing_key_file = Some(path)).await;
    let room = "keyed";
    let (mut alice, _) = s.joined("alice", room).await;
    let token = s.token(json!({"userId": "alice"})).await;
    assert_eq!(post_snapshot(&s, &token, room, &synthetic_png(64, 64, false), None).await.status(), 202);
    let ready = alice.recv_type("snapshot_ready").await;
    let report: Value = report_of(&s, &token, &ready).await;
    assert_eq!(report["keyId"], shared.kid());
    let keys: Value =
        s.http.get(s.url("/.well-known/switchboard-keys.json")).send().await.expect("get").json().await.expect("json");
    verify_signature(&report, &parse_key_set(&keys).expect("key set")).expect("signature");
    assert!(!s.dir.path().join(switchboard::evidence::report::KEY_FILE).exists(), "no key of its own was made");
}

/// Jobs that cannot succeed end `failed` with their reason: a stored snapshot that does not
/// decode fails at once (no retry), and a comparison nobody answers fails after its last
/// attempt (a dead letter), while the node goes on working other jobs.
#[tokio::test]
async fn jobs_that_cannot_succeed_fail_with_their_reason() {
    use std::time::Duration;
    use switchboard::snapshots::{RemoteCv, SnapshotWorker, WorkerSettings};
    use switchboard::store::NewJob;
    let s = TestServer::start_with(|c| c.snapshots.work = false).await;
    let room = "doomed-jobs";
    let (_alice, _) = s.joined("alice", room).await;
    let app = s.app().clone();
    let job = |subject: &str, cid: String| NewJob {
        room_id: room.into(),
        subject: subject.into(),
        requested_by: "alice".into(),
        idempotency_key: None,
        snapshot_cid: cid,
        origin_node: app.config.node_id.clone(),
    };
    // Bytes that passed no door: a PNG cut in half, stored as evidence.
    let mut truncated = synthetic_png(64, 64, false);
    truncated.truncate(truncated.len() / 2);
    let corrupt =
        app.store.create_snapshot_job(&job("corrupt", app.evidence.put(&truncated).await.expect("put"))).await;
    let corrupt = corrupt.expect("job").0.id;
    // A baseline, then a snapshot to compare through CV workers that never answer.
    let base = app.evidence.put(&synthetic_png(64, 64, false)).await.expect("put");
    let first = app.store.create_snapshot_job(&job("shelf", base)).await.expect("job").0.id;
    let changed = app.evidence.put(&synthetic_png(64, 64, true)).await.expect("put");
    let unanswered = app.store.create_snapshot_job(&job("shelf", changed)).await.expect("job").0.id;
    let settings = WorkerSettings {
        max_attempts: 2,
        retry_base: Duration::from_millis(20),
        remote: Some(RemoteCv::new(app.bus.clone(), "nobody-listens", Duration::from_millis(200))),
        ..WorkerSettings::default()
    };
    let worker = SnapshotWorker::spawn(app.clone(), app.snapshot_wake.clone(), settings).await.expect("worker");
    let settled = |id: String| {
        let app = app.clone();
        async move {
            for _ in 0..400 {
                let job = app.store.snapshot_job(&id).await.expect("db").expect("job");
                if matches!(job.state.as_str(), "failed" | "reported") {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("job {id} did not settle in 10 s");
        }
    };
    let failed = settled(corrupt).await;
    assert_eq!(
        (failed.state.as_str(), failed.error_code.as_deref(), failed.attempts),
        ("failed", Some("corrupt_image"), 1)
    );
    assert!(failed.last_error.as_deref().is_some_and(|e| e.contains("corrupt")), "{failed:?}");
    // It is not its subject's baseline: the subject's next good snapshot is.
    let good = app.evidence.put(&synthetic_png(48, 48, false)).await.expect("put");
    let next = app.store.create_snapshot_job(&job("corrupt", good)).await.expect("job").0.id;
    app.snapshot_wake.notify_one();
    let next = settled(next).await;
    let (_, report) = app.store.report(next.report_id.as_deref().expect("report")).await.expect("db").expect("report");
    assert_eq!(report["verdict"], "baseline");
    assert_eq!(settled(first).await.state, "reported", "the baseline needs no worker");
    let dead = settled(unanswered).await;
    assert_eq!(
        (dead.state.as_str(), dead.error_code.as_deref(), dead.attempts),
        ("failed", Some("attempts_exhausted"), 2)
    );
    assert!(dead.last_error.as_deref().is_some_and(|e| e.contains("no CV worker")), "{dead:?}");
    // Seen through the API as well.
    let token = s.token(json!({"userId": "alice"})).await;
    let shown: Value = get_as(&s, &token, &format!("/snapshots/{}", dead.id)).await.json().await.expect("json");
    assert_eq!((&shown["state"], &shown["errorCode"]), (&json!("failed"), &json!("attempts_exhausted")));
    worker.stop().await;
}
