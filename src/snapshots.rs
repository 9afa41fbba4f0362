//! Snapshot jobs, from a stored snapshot to a signed report. Each node runs a supervisor actor
//! that claims due jobs from the database (a claim older than `stale_after` is taken over: its
//! worker died on the way; with the local evidence store a node works the jobs of the snapshots
//! it stored) and runs each in its own linked actor, two at a time. A job: decodes the
//! snapshot, makes it the baseline of its subject or compares it with the baseline (here, or
//! through CV workers on the bus), stores the heatmap, records the score, writes the signed
//! report as the room's next link in one transaction with the job's last state (so a report
//! exists exactly once per job, and the chain cannot fork), and tells everyone in the room
//! (`snapshot_ready`). A failed attempt, or a job actor that failed, is retried with backoff
//! and jitter; a bad image fails at once, with its code.

use crate::app::App;
use crate::bus::{Bus, topics};
use crate::cv::gray::{Gray, ImageLimits};
use crate::cv::{self, CvError, Verdict};
use crate::cv_worker::{JobMessage, Outcome as RemoteOutcome, ResultMessage};
use crate::events::Event;
use crate::evidence::report::report_hash;
use crate::store::{Job, StoredReport};
use base64::Engine;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchboard_actors::ports::now_ms;
use switchboard_actors::protocol::ServerMessage;
use switchboard_actors::{ConnId, RoomId};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// How the worker runs.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// How often an idle worker looks for jobs (a job queued on this node wakes it at once).
    pub poll_interval: Duration,
    /// A claim not renewed for this long is taken over (a running job renews its claim every
    /// third of it).
    pub stale_after: Duration,
    /// Attempts before a job fails for good.
    pub max_attempts: i64,
    /// The first retry's delay; each next one doubles.
    pub retry_base: Duration,
    /// Compare through CV workers on the bus instead of in this process.
    pub remote: Option<RemoteCv>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            stale_after: Duration::from_secs(10),
            max_attempts: 5,
            retry_base: Duration::from_millis(500),
            remote: None,
        }
    }
}

/// Comparisons made by CV workers on the bus: a job goes out on the jobs topic, its result
/// comes back on the results topic, matched by job and attempt.
#[derive(Clone)]
pub struct RemoteCv {
    bus: Bus,
    cluster: String,
    timeout: Duration,
    waiting: Waiting,
}

type Waiting = Arc<std::sync::Mutex<HashMap<(String, i64), oneshot::Sender<ResultMessage>>>>;

impl std::fmt::Debug for RemoteCv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCv").field("cluster", &self.cluster).field("timeout", &self.timeout).finish()
    }
}

impl RemoteCv {
    /// Listens for results on `bus`; a job waits `timeout` for one before it is tried again.
    pub fn new(bus: Bus, cluster: &str, timeout: Duration) -> RemoteCv {
        let remote = RemoteCv { bus, cluster: cluster.to_owned(), timeout, waiting: Arc::default() };
        let mut results = remote.bus.subscribe(&topics::snapshot_results(cluster), 64);
        let waiting = remote.waiting.clone();
        tokio::spawn(async move {
            while let Some(d) = results.recv().await {
                let Ok(result) = serde_json::from_slice::<ResultMessage>(&d.payload) else { continue };
                let key = (result.job_id.clone(), result.attempt);
                let waiter = waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
                // No waiter: a repeat, or an answer after the job was given up on.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
        });
        remote
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), oneshot::Sender<ResultMessage>>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks a worker; its result, or why there was none.
    async fn compare(&self, job: JobMessage) -> Result<ResultMessage, Failure> {
        let key = (job.job_id.clone(), job.attempt);
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(key.clone(), tx);
        let body = serde_json::to_vec(&job).map_err(|e| Failure::Transient(e.to_string()))?;
        let sent = match self.bus.publish(&topics::snapshot_jobs(&self.cluster), body) {
            Ok(confirmed) => confirmed.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            self.waiting().remove(&key);
            return Err(Failure::Transient(format!("job not published: {e}")));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => Ok(result),
            _ => {
                self.waiting().remove(&key);
                Err(Failure::Transient("no CV worker answered in time".into()))
            }
        }
    }
}

/// The node's snapshot jobs: a supervisor actor that claims due jobs and runs each in its own
/// linked actor (at most `MAX_RUNNING` at once). A job actor that fails is recorded as a failed
/// attempt and retried like any other.
pub struct SnapshotWorker {
    actor: ActorRef<JobsMsg>,
    waker: JoinHandle<()>,
}

impl std::fmt::Debug for SnapshotWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWorker").finish_non_exhaustive()
    }
}

/// Jobs run at once per node.
const MAX_RUNNING: usize = 2;

impl SnapshotWorker {
    /// Starts the node's job supervisor; `wake` is notified when a job is queued here.
    pub async fn spawn(app: Arc<App>, wake: Arc<Notify>, settings: WorkerSettings) -> anyhow::Result<SnapshotWorker> {
        let args = JobsArgs { app, settings };
        let (actor, _) = Actor::spawn(None, SnapshotJobs, args).await?;
        let poke = actor.clone();
        let waker = tokio::spawn(async move {
            loop {
                wake.notified().await;
                if poke.cast(JobsMsg::Poll).is_err() {
                    return;
                }
            }
        });
        Ok(SnapshotWorker { actor, waker })
    }

    /// Stops the supervisor and its jobs (a job cut short is taken up again once its claim is
    /// stale).
    pub async fn stop(self) {
        self.waker.abort();
        let _ = self.actor.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
    }
}

/// The supervisor of the node's snapshot jobs.
struct SnapshotJobs;

struct JobsArgs {
    app: Arc<App>,
    settings: WorkerSettings,
}

struct JobsState {
    app: Arc<App>,
    settings: WorkerSettings,
    baselines: Arc<Baselines>,
    running: HashMap<ractor::ActorId, Job>,
}

/// What the supervisor is told.
enum JobsMsg {
    /// Look for due jobs.
    Poll,
    /// Refresh the job gauges.
    Gauge,
}

impl ractor::Message for JobsMsg {}

/// What a job actor is told: run (once, at its start).
struct Run;

impl ractor::Message for Run {}

impl Actor for SnapshotJobs {
    type Msg = JobsMsg;
    type State = JobsState;
    type Arguments = JobsArgs;

    async fn pre_start(&self, myself: ActorRef<JobsMsg>, args: JobsArgs) -> Result<JobsState, ActorProcessingErr> {
        myself.send_interval(args.settings.poll_interval, || JobsMsg::Poll);
        myself.send_interval(Duration::from_secs(1), || JobsMsg::Gauge);
        Ok(JobsState { app: args.app, settings: args.settings, baselines: Arc::default(), running: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<JobsMsg>,
        msg: JobsMsg,
        state: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobsMsg::Poll => claim_more(&myself, state).await,
            JobsMsg::Gauge => {
                if let Ok(counts) = state.app.store.snapshot_job_counts().await {
                    for (name, n) in ["queued", "dispatched", "scored"].into_iter().zip(counts) {
                        metrics::gauge!("switchboard_snapshot_jobs", "state" => name).set(n as f64);
                    }
                }
                metrics::gauge!("switchboard_snapshot_jobs_running").set(state.running.len() as f64);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<JobsMsg>,
        event: SupervisionEvent,
        state: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.running.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(job) = state.running.remove(&cell.get_id()) {
                    metrics::counter!("switchboard_actor_restarts_total", "actor" => "snapshot_job").increment(1);
                    tracing::warn!(job = %job.id, error = %err, "snapshot job actor failed");
                    let failure = Failure::Transient(format!("the job's actor failed: {err}"));
                    record_failure(&state.app, &state.settings, &job, failure).await;
                }
            }
            _ => {}
        }
        claim_more(&myself, state).await;
        Ok(())
    }
}

/// Claims due jobs while fewer than `MAX_RUNNING` run, each into its own linked actor.
async fn claim_more(myself: &ActorRef<JobsMsg>, state: &mut JobsState) {
    let node = state.app.config.node_id.clone();
    let stale = state.settings.stale_after.as_millis() as i64;
    while state.running.len() < MAX_RUNNING {
        let job = match state.app.store.claim_snapshot_job(&node, stale, state.app.evidence.shared()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot job not claimed");
                return;
            }
        };
        let args = JobArgs {
            app: state.app.clone(),
            settings: state.settings.clone(),
            baselines: state.baselines.clone(),
            job: job.clone(),
        };
        match Actor::spawn_linked(None, SnapshotJob, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                state.running.insert(actor.get_id(), job);
            }
            Err(e) => {
                let failure = Failure::Transient(format!("the job's actor did not start: {e}"));
                record_failure(&state.app, &state.settings, &job, failure).await;
                return;
            }
        }
    }
}

/// One job: runs its attempt once started, then stops.
struct SnapshotJob;

struct JobArgs {
    app: Arc<App>,
    settings: WorkerSettings,
    baselines: Arc<Baselines>,
    job: Job,
}

impl Actor for SnapshotJob {
    type Msg = Run;
    type State = JobArgs;
    type Arguments = JobArgs;

    async fn pre_start(&self, myself: ActorRef<Run>, args: JobArgs) -> Result<JobArgs, ActorProcessingErr> {
        let _ = myself.cast(Run);
        Ok(args)
    }

    async fn handle(&self, myself: ActorRef<Run>, _: Run, state: &mut JobArgs) -> Result<(), ActorProcessingErr> {
        let started = std::time::Instant::now();
        let _claim = KeptClaim::start(state.app.clone(), state.job.clone(), state.settings.stale_after / 3);
        process(&state.app, &state.settings, &state.baselines, state.job.clone()).await;
        metrics::histogram!("switchboard_snapshot_job_seconds").record(started.elapsed().as_secs_f64());
        myself.stop(None);
        Ok(())
    }
}

/// Renews a running job's claim every `every` until dropped (when the job ends, or its actor
/// fails), so another node takes the job over only once this one stopped working it.
struct KeptClaim(JoinHandle<()>);

impl KeptClaim {
    fn start(app: Arc<App>, job: Job, every: Duration) -> KeptClaim {
        KeptClaim(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match app.store.renew_snapshot_claim(&job, &app.config.node_id).await {
                    Ok(true) => {}
                    Ok(false) => return, // taken over: the job's next write finds out too
                    Err(e) => tracing::warn!(job = %job.id, error = %e, "snapshot claim not renewed"),
                }
            }
        }))
    }
}

impl Drop for KeptClaim {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Decoded baselines by CID, shared by the node's job actors: most jobs compare with the same
/// few.
#[derive(Default)]
struct Baselines {
    decoded: std::sync::Mutex<Vec<(String, Arc<Gray>)>>,
}

impl Baselines {
    const KEPT: usize = 8;

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Arc<Gray>)>> {
        self.decoded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, cid: &str) -> Option<Arc<Gray>> {
        let mut decoded = self.lock();
        let at = decoded.iter().position(|(c, _)| c == cid)?;
        let hit = decoded.remove(at);
        let gray = hit.1.clone();
        decoded.push(hit);
        Some(gray)
    }

    fn put(&self, cid: &str, gray: Arc<Gray>) {
        let mut decoded = self.lock();
        if decoded.len() >= Self::KEPT {
            decoded.remove(0);
        }
        decoded.push((cid.to_owned(), gray));
    }
}

/// Why an attempt failed.
enum Failure {
    /// The input is bad: no retry.
    Permanent(String, String),
    /// Something on the way failed: retry.
    Transient(String),
}

impl From<CvError> for Failure {
    fn from(e: CvError) -> Failure {
        Failure::Permanent(e.code().to_owned(), e.to_string())
    }
}

async fn process(app: &App, s: &WorkerSettings, baselines: &Baselines, job: Job) {
    match attempt(app, s, baselines, &job).await {
        Ok(()) => metrics::counter!("switchboard_snapshot_jobs_total", "outcome" => "reported").increment(1),
        Err(failure) => record_failure(app, s, &job, failure).await,
    }
}

/// Records a failed attempt: failed for good (bad input, or the last attempt), or queued again
/// after a backoff.
async fn record_failure(app: &App, s: &WorkerSettings, job: &Job, failure: Failure) {
    let node = &app.config.node_id;
    match failure {
        Failure::Permanent(code, error) => {
            metrics::counter!("switchboard_snapshot_jobs_total", "outcome" => "failed").increment(1);
            tracing::info!(job = %job.id, code = %code, error = %error, "snapshot job failed");
            let _ = app.store.fail_snapshot_job(job, node, &code, &error, None).await;
        }
        Failure::Transient(error) => {
            let last = job.attempts >= s.max_attempts;
            let retry_at = (!last).then(|| {
                let delay = crate::webhooks::dispatcher::backoff(s.retry_base, Duration::from_secs(60), job.attempts);
                now_ms() + delay.as_millis() as i64
            });
            metrics::counter!("switchboard_snapshot_jobs_total", "outcome" => if last { "dead" } else { "retry" })
                .increment(1);
            tracing::warn!(job = %job.id, attempts = job.attempts, error = %error, "snapshot attempt failed");
            let code = if last { "attempts_exhausted" } else { "retrying" };
            let _ = app.store.fail_snapshot_job(job, node, code, &error, retry_at).await;
        }
    }
}

async fn attempt(app: &App, s: &WorkerSettings, baselines: &Baselines, job: &Job) -> Result<(), Failure> {
    let node = &app.config.node_id;
    let transient = |e: &dyn std::fmt::Display| Failure::Transient(e.to_string());
    let limits = ImageLimits::default();
    let bytes = app.evidence.get(&job.snapshot_cid).await.map_err(|e| transient(&e))?.ok_or_else(|| {
        Failure::Permanent(
            "snapshot_missing".into(),
            format!("snapshot {} is not in the evidence store", job.snapshot_cid),
        )
    })?;
    let (baseline_cid, baseline_job) = app
        .store
        .baseline_for(&job.room_id, &job.subject, &job.snapshot_cid, &job.id)
        .await
        .map_err(|e| transient(&e))?;
    let is_baseline = baseline_job == job.id;
    let missing_baseline = || {
        Failure::Permanent("baseline_missing".into(), format!("baseline {baseline_cid} is not in the evidence store"))
    };
    let decode = |bytes: Vec<u8>| async move {
        let decoded = tokio::task::spawn_blocking(move || Gray::decode(&bytes, &limits)).await;
        decoded.map_err(|e| transient(&e))?.map_err(Failure::from)
    };
    let (score, regions, verdict, heatmap, algorithm, baseline) = if is_baseline {
        // A baseline is compared with nothing, but it must be an image the next ones can be
        // compared with; decoded, it is kept for them.
        baselines.put(&job.snapshot_cid, Arc::new(decode(bytes).await?));
        let info = json!({"name": cv::ALGORITHM, "version": cv::VERSION, "params": cv::Params::default()});
        (1.0, Vec::new(), Verdict::Baseline, None, info, None)
    } else if let Some(remote) = &s.remote {
        let base_bytes =
            app.evidence.get(&baseline_cid).await.map_err(|e| transient(&e))?.ok_or_else(missing_baseline)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let ask = JobMessage {
            job_id: job.id.clone(),
            attempt: job.attempts,
            snapshot: b64.encode(&bytes),
            baseline: b64.encode(&base_bytes),
            params: cv::Params::default(),
        };
        match remote.compare(ask).await?.outcome {
            RemoteOutcome::Scored { score, regions, verdict, algorithm, heatmap } => {
                let png = b64
                    .decode(heatmap)
                    .map_err(|_| Failure::Transient("a worker sent a heatmap that is not base64".into()))?;
                (score, regions, verdict, Some(png), algorithm, Some(baseline_cid.clone()))
            }
            RemoteOutcome::Failed { code, error } => return Err(Failure::Permanent(code, error)),
        }
    } else {
        let snapshot = decode(bytes).await?;
        let base = match baselines.get(&baseline_cid) {
            Some(base) => base,
            None => {
                let bytes =
                    app.evidence.get(&baseline_cid).await.map_err(|e| transient(&e))?.ok_or_else(missing_baseline)?;
                let base = Arc::new(decode(bytes).await?);
                baselines.put(&baseline_cid, base.clone());
                base
            }
        };
        // The comparison is CPU work: off the async workers.
        let analysis = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let analysis = cv::compare(&snapshot, &base, &cv::Params::default());
            metrics::histogram!("switchboard_cv_compare_seconds").record(started.elapsed().as_secs_f64());
            analysis
        })
        .await
        .map_err(|e| transient(&e))??;
        let info = serde_json::to_value(&analysis.algorithm).unwrap_or_default();
        (
            analysis.score,
            analysis.regions,
            analysis.verdict,
            Some(analysis.heatmap_png),
            info,
            Some(baseline_cid.clone()),
        )
    };
    let heatmap_cid = match heatmap {
        Some(png) => Some(app.evidence.put(&png).await.map_err(|e| transient(&e))?),
        None => None,
    };
    let verdict_text =
        serde_json::to_value(verdict).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let scored = Event::SnapshotScored {
        job_id: job.id.clone(),
        subject: job.subject.clone(),
        verdict: verdict_text.clone(),
        score,
    };
    let held = app
        .store
        .mark_snapshot_scored(job, node, baseline.as_deref(), heatmap_cid.as_deref(), &scored)
        .await
        .map_err(|e| transient(&e))?;
    if !held {
        return Ok(()); // another node took the job over; it will finish it
    }
    // The call the snapshot was taken in, with its quality so far (seed D4).
    let call_quality = match app.store.room(&job.room_id).await {
        Ok(Some(room)) if room.call_status.is_open() => match &room.call_id {
            Some(call) => app.store.call_quality(&job.room_id, call, &app.fallback_policy()).await.ok().flatten(),
            None => None,
        },
        _ => None,
    };
    let report_id = format!("rep_{}", uuid::Uuid::now_v7().simple());
    let created_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let make = |prev: Option<String>| {
        let mut body = json!({
            "reportId": report_id,
            "roomId": job.room_id,
            "jobId": job.id,
            "subject": job.subject,
            "snapshotCid": job.snapshot_cid,
            "baselineCid": baseline,
            "heatmapCid": heatmap_cid,
            "score": score,
            "regions": regions,
            "verdict": verdict_text,
            "algorithm": algorithm,
            "requestedBy": job.requested_by,
            "createdAt": created_at,
            "prevReportHash": prev,
            "callQuality": call_quality,
        });
        app.signing_key.sign(&mut body)?;
        let hash = report_hash(&body)?;
        Ok(StoredReport { id: report_id.clone(), body, hash })
    };
    let Some(report) = app.store.finish_snapshot_job(job, node, make).await.map_err(|e| transient(&e))? else {
        return Ok(());
    };
    let ready = ServerMessage::SnapshotReady {
        job_id: &job.id,
        report_id: &report.id,
        subject: &job.subject,
        verdict: &verdict_text,
        score,
        requested_by: &job.requested_by,
    }
    .to_body();
    notify_room(app, &RoomId::new(&job.room_id), ready.to_string()).await;
    Ok(())
}

/// Tells everyone in `room` (wherever it lives) with a room frame. While the room is moving
/// (its node died or is draining) it is asked again, for up to five seconds.
async fn notify_room(app: &App, room: &RoomId, body: String) {
    const TRIES: u32 = 20;
    for tried in 1..=TRIES {
        let owner = match &app.cluster {
            Some(_) => {
                app.store.lease_holder(room.as_str()).await.ok().flatten().unwrap_or_else(|| app.config.node_id.clone())
            }
            None => app.config.node_id.clone(),
        };
        let mut handle = crate::routing::handle_for(app, room, &owner).await;
        let msg = switchboard_actors::room::RoomMsg::Notify { body: body.clone() };
        match crate::routing::send(app, &mut handle, room, &ConnId::new(""), msg).await {
            Ok(_) => return,
            Err((code, message)) if tried == TRIES => {
                tracing::info!(room_id = %room, code = code.as_str(), message, "snapshot_ready not delivered");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
