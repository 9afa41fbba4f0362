//! Snapshot latency: a participant posts 1280×720 PNG snapshots of one subject on an open-loop
//! schedule (the first becomes the baseline, every later one is compared with it); measured
//! from the start of the POST to `snapshot_ready` at another participant's connection, which
//! is the whole path: upload, decode check, evidence store, job, SSIM, heatmap, signed and
//! chained report, and the room's frame.

use super::cv::synthetic_png;
use super::dialer::Dialer;
use super::node::BenchNode;
use super::relay::round2;
use super::report::{Latencies, Run};
use anyhow::{Result, anyhow};
use base64::Engine;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Posts `rate` snapshots per second for `seconds`.
pub async fn snapshots(node: &BenchNode, rate: f64, seconds: u64, width: u32, height: u32) -> Result<Run> {
    let dial = Dialer::new(node.addr, 1);
    let room = "snapshot-bench";
    let mut observer = dial.join("observer", room).await?;
    let _poster = dial.join("poster", room).await?;
    let token = dial.token("poster")?;
    let http = reqwest::Client::new();
    let url = format!("http://{}/rooms/{room}/snapshots", node.addr);
    let encode = |png: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(png);
    let (baseline, changed) = (encode(synthetic_png(width, height, false)), encode(synthetic_png(width, height, true)));
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = (rate * seconds as f64).ceil() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now() + Duration::from_millis(100);
    let cpu0 = node.cpu()?;
    let poster = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut failed = 0u64;
            for n in 0..total {
                let due = t0 + interval.mul_f64(n as f64);
                tokio::time::sleep_until(due.into()).await;
                let image = if n == 0 { &baseline } else { &changed };
                let (http, url, token, sent) = (http.clone(), url.clone(), token.clone(), sent.clone());
                let body = json!({"image": image, "subject": "camera-1"});
                // Measured from the intended start: a late generator shows up in the figures.
                let resp = http.post(&url).bearer_auth(&token).json(&body).send().await;
                match resp {
                    Ok(r) if r.status() == 202 => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        if let Some(id) = v["jobId"].as_str() {
                            sent.lock().await.insert(id.to_owned(), due);
                        }
                    }
                    _ => failed += 1,
                }
            }
            failed
        })
    };
    let mut latencies = Latencies::default();
    let deadline = t0 + Duration::from_secs(seconds + 30);
    let mut early: HashMap<String, Instant> = HashMap::new();
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(5), observer.conn.expect("snapshot_ready")).await
        else {
            if poster.is_finished() && sent.lock().await.is_empty() {
                break;
            }
            continue;
        };
        let now = Instant::now();
        let id = v["jobId"].as_str().unwrap_or_default().to_owned();
        match sent.lock().await.remove(&id) {
            Some(start) => latencies.push(now - start),
            // Ready before the POST's answer was read: matched when it is.
            None => {
                early.insert(id, now);
            }
        }
        let mut s = sent.lock().await;
        for (id, at) in early.clone() {
            if let Some(start) = s.remove(&id) {
                latencies.push(at - start);
                early.remove(&id);
            }
        }
    }
    let failed = poster.await.map_err(|e| anyhow!("poster: {e}"))?;
    let elapsed = t0.elapsed();
    let cpu = node.cpu()? - cpu0;
    let mut run = Run::new(
        "snapshot",
        format!("{rate}/s for {seconds} s, {width}×{height} PNG, one subject"),
        "trigger → snapshot_ready p50 <= 300 ms, p99 <= 600 ms; >= 20 snapshots/s",
    );
    let done = latencies.len();
    run.add("snapshots", done as f64)
        .add("failed", failed as f64 + total.saturating_sub(done as u64 + failed) as f64)
        .latency("ready", latencies.summary())
        .add("server_cpu_pct", round2(100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()));
    Ok(run)
}
