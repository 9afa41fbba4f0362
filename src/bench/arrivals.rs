//! Open-loop arrivals: client `n` of `rate × seconds` starts at its scheduled instant, whether
//! or not the earlier ones are done, and its outcome is collected at the end. The join and
//! lobby benchmarks are this schedule with different clients.

use anyhow::Result;
use std::future::Future;
use std::time::{Duration, Instant};

/// What the arrivals came to: each one's outcome, the failures, and how long it all took.
pub struct Outcomes<T> {
    /// The outcomes of the arrivals that succeeded, in arrival order.
    pub done: Vec<T>,
    /// Arrivals that failed (the first one's error is printed).
    pub failed: u64,
    /// From the first scheduled arrival to the last outcome.
    pub elapsed: Duration,
}

/// Starts `client(n, due)` at `due` for `rate` arrivals a second over `seconds`.
pub async fn open_loop<T, F, Fut>(rate: u64, seconds: u64, what: &str, client: F) -> Result<Outcomes<T>>
where
    T: Send + 'static,
    F: Fn(u64, Instant) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = t0 + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        tasks.push(tokio::spawn(client(n, due)));
    }
    let (mut done, mut failed) = (Vec::with_capacity(tasks.len()), 0u64);
    for t in tasks {
        match t.await? {
            Ok(v) => done.push(v),
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("{what} failed: {e:#}");
                }
            }
        }
    }
    Ok(Outcomes { done, failed, elapsed: t0.elapsed() })
}
