//! Benchmark results: latency distributions, one row per run printed as a table, and all of
//! them written as JSON with the machine and the date.

use serde::Serialize;
use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Records one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }

    /// Takes another set's samples.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// p50, p99, p99.9 and max, in microseconds.
    pub fn summary(&mut self) -> Percentiles {
        self.0.sort_unstable();
        let at = |q: f64| -> u32 {
            if self.0.is_empty() {
                return 0;
            }
            self.0[((self.0.len() as f64 * q) as usize).min(self.0.len() - 1)]
        };
        Percentiles { p50_us: at(0.50), p99_us: at(0.99), p999_us: at(0.999), max_us: at(1.0) }
    }
}

/// A latency distribution's summary.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u32,
    /// 99th percentile.
    pub p99_us: u32,
    /// 99.9th percentile.
    pub p999_us: u32,
    /// Largest sample.
    pub max_us: u32,
}

/// One benchmark run: what was run and what it measured.
#[derive(Debug, Serialize)]
pub struct Run {
    /// Which benchmark (`relay`, `throughput`, `fanout`, `join`, `idle`).
    pub bench: String,
    /// Its parameters, in words (`20000/s, 100 pairs, id+receipt`).
    pub setup: String,
    /// Named figures.
    pub figures: Vec<(String, f64)>,
    /// The target it is held against, in words.
    pub target: String,
}

impl Run {
    /// A run with no figures yet.
    pub fn new(bench: &str, setup: String, target: &str) -> Run {
        Run { bench: bench.to_owned(), setup, figures: Vec::new(), target: target.to_owned() }
    }

    /// Adds a figure.
    pub fn add(&mut self, name: &str, value: f64) -> &mut Run {
        self.figures.push((name.to_owned(), value));
        self
    }

    /// Adds a latency summary under `prefix`.
    pub fn latency(&mut self, prefix: &str, p: Percentiles) -> &mut Run {
        self.add(&format!("{prefix}_p50_us"), p.p50_us as f64)
            .add(&format!("{prefix}_p99_us"), p.p99_us as f64)
            .add(&format!("{prefix}_p999_us"), p.p999_us as f64)
            .add(&format!("{prefix}_max_us"), p.max_us as f64)
    }

    /// Prints the run as a block of `name value` lines.
    pub fn print(&self) {
        println!("{} ({}); target: {}", self.bench, self.setup, self.target);
        for (name, value) in &self.figures {
            if value.fract() == 0.0 {
                println!("  {name:<28} {value:.0}");
            } else {
                println!("  {name:<28} {value:.2}");
            }
        }
    }
}

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When (RFC 3339, UTC).
    pub date: String,
    /// CPU model and count, memory.
    pub machine: String,
    /// The server build.
    pub build: String,
    /// The runs.
    pub runs: Vec<Run>,
}

impl Report {
    /// An empty report for this machine and now.
    pub fn new() -> Report {
        Report {
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            machine: machine(),
            build: build(),
            runs: Vec::new(),
        }
    }

    /// Prints a summary table of every run's main figures.
    pub fn print_table(&self) {
        println!();
        println!("| bench | setup | figures | target |");
        println!("|---|---|---|---|");
        for run in &self.runs {
            let figures: Vec<String> = run
                .figures
                .iter()
                .filter(|(name, _)| !name.ends_with("_p999_us"))
                .map(|(name, v)| if v.fract() == 0.0 { format!("{name} {v:.0}") } else { format!("{name} {v:.2}") })
                .collect();
            println!("| {} | {} | {} | {} |", run.bench, run.setup, figures.join(", "), run.target);
        }
    }

    /// Writes the report as JSON.
    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        println!("results written to {}", path.display());
        Ok(())
    }
}

impl Default for Report {
    fn default() -> Self {
        Report::new()
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!("{cores} cores, {model}, {} GiB", mem_kib / 1024 / 1024)
}

fn build() -> String {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    format!("switchboard {} ({profile})", env!("CARGO_PKG_VERSION"))
}
