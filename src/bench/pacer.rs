//! The open-loop pacer: a plain thread that sends message *n* at *t0 + n × interval* on
//! writer *n mod writers*, sleeping (with precise timer slack) until each is due and recording
//! how late it was. Latency is then measured from the schedule, so a generator that falls
//! behind shows up instead of hiding.

use super::node::precise_sleeps;
use super::report::Latencies;
use super::wire;
use anyhow::{Result, anyhow};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What the pacer saw of itself.
pub struct Paced {
    /// How late each send was against its schedule.
    pub late: Latencies,
    /// Times a write waited for a full socket buffer.
    pub waits: u64,
}

/// Sends `total` messages whose text `payload(n, writer)` makes, on the schedule above, and
/// returns once the last one is written.
pub async fn pace(
    t0: Instant,
    interval: Duration,
    total: u64,
    mut writers: Vec<TcpStream>,
    mut payload: impl FnMut(u64, usize) -> String + Send + 'static,
) -> Result<Paced> {
    let pacer = std::thread::spawn(move || -> Result<Paced> {
        precise_sleeps();
        let mut paced = Paced { late: Latencies::default(), waits: 0 };
        let mut buf = Vec::with_capacity(2048);
        for n in 0..total {
            let due = t0 + interval.mul_f64(n as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            paced.late.push(Instant::now().saturating_duration_since(due));
            let w = n as usize % writers.len();
            buf.clear();
            wire::text_frame(&mut buf, payload(n, w).as_bytes());
            paced.waits += u64::from(wire::write_all_retrying(&mut writers[w], &buf)?);
        }
        Ok(paced)
    });
    tokio::task::spawn_blocking(move || pacer.join()).await?.map_err(|_| anyhow!("the pacer panicked"))?
}
