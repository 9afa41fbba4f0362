//! The CV worker: takes snapshot comparisons from the bus (`switchboard/{cluster}/jobs/snapshot`
//! through the shared subscription `$share/cv/...`, so each job goes to one worker), compares,
//! and publishes what it found on `switchboard/{cluster}/results/snapshot`. It keeps no state:
//! a job carries both images, a result carries the heatmap, and a worker that dies mid-job
//! simply never answers (the node that owns the job asks again). Runs as its own process
//! (`switchboard cv-worker`) or inside a node.

use crate::bus::{Bus, topics};
use crate::cv::gray::{Gray, ImageLimits};
use crate::cv::{self, Params};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

/// A comparison to make.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    /// The job.
    pub job_id: String,
    /// Its attempt (a result for another attempt is ignored).
    pub attempt: i64,
    /// The snapshot, base64.
    pub snapshot: String,
    /// Its baseline, base64.
    pub baseline: String,
    /// The comparison's parameters.
    pub params: Params,
}

/// What a worker found.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultMessage {
    /// The job.
    pub job_id: String,
    /// The attempt it answers.
    pub attempt: i64,
    /// The outcome: the analysis, or the error code and message of an image it could not use.
    pub outcome: Outcome,
    /// Which worker.
    pub worker: String,
}

/// A worker's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Outcome {
    /// Compared.
    #[serde(rename_all = "camelCase")]
    Scored {
        /// Mean SSIM.
        score: f64,
        /// Changed regions.
        regions: Vec<cv::regions::Region>,
        /// The verdict.
        verdict: cv::Verdict,
        /// The algorithm and parameters.
        algorithm: Value,
        /// The heatmap PNG, base64.
        heatmap: String,
    },
    /// An image could not be used.
    Failed {
        /// The code (`corrupt_image`, ...).
        code: String,
        /// What was wrong.
        error: String,
    },
}

/// Compares the images of one job.
pub fn handle(job: &JobMessage, worker: &str) -> ResultMessage {
    let limits = ImageLimits::default();
    let outcome = (|| {
        let decode = |b64: &str| {
            let bytes = STANDARD.decode(b64).map_err(|_| ("corrupt_image".to_owned(), "not base64".to_owned()))?;
            Gray::decode(&bytes, &limits).map_err(|e| (e.code().to_owned(), e.to_string()))
        };
        let (snapshot, baseline) = (decode(&job.snapshot)?, decode(&job.baseline)?);
        let started = std::time::Instant::now();
        let a = cv::compare(&snapshot, &baseline, &job.params).map_err(|e| (e.code().to_owned(), e.to_string()))?;
        metrics::histogram!("switchboard_cv_compare_seconds").record(started.elapsed().as_secs_f64());
        Ok::<_, (String, String)>(Outcome::Scored {
            score: a.score,
            regions: a.regions,
            verdict: a.verdict,
            algorithm: serde_json::to_value(&a.algorithm).unwrap_or_default(),
            heatmap: STANDARD.encode(&a.heatmap_png),
        })
    })()
    .unwrap_or_else(|(code, error)| Outcome::Failed { code, error });
    ResultMessage { job_id: job.job_id.clone(), attempt: job.attempt, outcome, worker: worker.to_owned() }
}

/// Works jobs from `bus` until `stopped`.
pub async fn run(bus: Bus, cluster: String, worker: String, mut stopped: watch::Receiver<bool>) {
    let mut jobs = bus.subscribe(&topics::snapshot_jobs_shared(&cluster), 16);
    let results = topics::snapshot_results(&cluster);
    loop {
        let delivery = tokio::select! {
            _ = stopped.changed() => return,
            d = jobs.recv() => match d { Some(d) => d, None => return },
        };
        let job: JobMessage = match serde_json::from_slice(&delivery.payload) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "a snapshot job that is not one; dropped");
                continue;
            }
        };
        let name = worker.clone();
        let Ok(result) = tokio::task::spawn_blocking(move || handle(&job, &name)).await else { continue };
        let body = serde_json::to_vec(&result).unwrap_or_default();
        match bus.publish(&results, body) {
            Ok(confirmed) => {
                if let Err(e) = confirmed.await {
                    tracing::info!(job = %result.job_id, error = %e, "result not confirmed; the node asks again");
                }
            }
            Err(e) => tracing::warn!(job = %result.job_id, error = %e, "result not published"),
        }
        metrics::counter!("switchboard_cv_jobs_total").increment(1);
    }
}
