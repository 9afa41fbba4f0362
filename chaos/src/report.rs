//! A run's report: written as JSON, printed as a summary table.

use crate::faults::{Fault, Kind};
use crate::ledger::Totals;
use crate::peer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

/// One injected fault and how the clients came back from it.
#[derive(Debug, Serialize)]
pub struct FaultRecord {
    pub kind: Kind,
    pub node: Option<String>,
    pub clients: usize,
    /// Seconds since the run's clients started.
    pub at_s: f64,
    /// The longest any client went without an acknowledgement after the fault, in seconds
    /// (`None`: some client did not come back within the budget).
    pub all_back_s: Option<f64>,
    pub within_target: bool,
    /// The same over the clients that were not connected to the node hit: how long their
    /// rooms took to serve again (for faults on no node, the same as `all_back_s`).
    pub rooms_back_s: f64,
    /// The same per client, sorted (a client the fault did not touch goes about one sending
    /// interval without one).
    pub client_recovery_s: Vec<f64>,
    /// Whether each WebRTC call's renegotiation after this fault was answered.
    pub renegotiated: Vec<bool>,
}

/// Everything about one run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    pub nodes: usize,
    pub rooms: usize,
    pub webrtc_rooms: usize,
    /// Silent rooms beside the checked ones (a run at size).
    pub idle_rooms: usize,
    pub clients: usize,
    pub duration_s: f64,
    pub faults_s: f64,
    pub schedule: Vec<Fault>,
    pub faults: Vec<FaultRecord>,
    pub totals: Totals,
    pub counters: BTreeMap<String, u64>,
    pub invariants: Vec<(String, bool)>,
    pub violations: Vec<String>,
    pub webrtc: Vec<peer::Summary>,
    pub ownerships_seen: usize,
    pub logs: PathBuf,
    /// The run's database, kept when the run failed.
    pub database: Option<String>,
    /// Connections, resumes, faults and violations in time order (failed runs only).
    pub journal: Vec<String>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Recovery figures per fault kind: (kind, count, p50, p99, max) of what `pick` takes from
/// each fault.
pub fn recovery_by_kind(faults: &[&FaultRecord], pick: fn(&FaultRecord) -> f64) -> Vec<(Kind, usize, f64, f64, f64)> {
    let mut by: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
    for f in faults {
        by.entry(f.kind).or_default().push(pick(f));
    }
    by.into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, v.len(), percentile(&v, 50.0), percentile(&v, 99.0), v[v.len() - 1])
        })
        .collect()
}

/// The summary table of one or more runs.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let passed = reports.iter().all(|r| r.passed);
    let _ = writeln!(out, "\n== chaos summary: {}", if passed { "PASSED" } else { "FAILED" });
    let _ = writeln!(
        out,
        "{:<14} {:>20} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>5} {:>6}",
        "scenario", "seed", "faults", "sent", "acked", "deliv", "lost", "dup", "order", "result"
    );
    for r in reports {
        let t = &r.totals;
        let _ = writeln!(
            out,
            "{:<14} {:>20} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>5} {:>6}",
            r.scenario,
            r.seed,
            r.faults.len(),
            t.sent,
            t.acked,
            t.delivered,
            t.lost,
            t.duplicated,
            t.out_of_order,
            if r.passed { "pass" } else { "FAIL" }
        );
    }
    let all: Vec<&FaultRecord> = reports.iter().flat_map(|r| r.faults.iter()).collect();
    let _ =
        writeln!(out, "\nrecovery, seconds: the longest any client went without an acknowledgement after the fault");
    let _ = writeln!(out, "(rooms: clients not connected to the node hit; all: every client, reconnecting ones too)");
    let _ = writeln!(
        out,
        "{:<12} {:>4} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "fault", "n", "rooms p50", "rooms p99", "rooms max", "all p50", "all p99", "all max", "target"
    );
    let rooms = recovery_by_kind(&all, |f| f.rooms_back_s);
    let clients = recovery_by_kind(&all, |f| f.all_back_s.unwrap_or(f64::INFINITY));
    for ((kind, n, r50, r99, rmax), (_, _, a50, a99, amax)) in rooms.into_iter().zip(clients) {
        let _ = writeln!(
            out,
            "{:<12} {:>4} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2} {:>8.2} {:>7.1}",
            kind.name(),
            n,
            r50,
            r99,
            rmax,
            a50,
            a99,
            amax,
            kind.target().as_secs_f64()
        );
    }
    for r in reports {
        let _ = writeln!(
            out,
            "\n{} (seed {}): {:.0} s, {} clients in {} rooms + {} WebRTC calls on {} nodes",
            r.scenario, r.seed, r.duration_s, r.clients, r.rooms, r.webrtc_rooms, r.nodes
        );
        for (name, ok) in &r.invariants {
            let _ = writeln!(out, "  [{}] {name}", if *ok { " ok " } else { "FAIL" });
        }
        for v in r.violations.iter().take(20) {
            let _ = writeln!(out, "  ! {v}");
        }
        if r.violations.len() > 20 {
            let _ = writeln!(out, "  ! ... {} more in the JSON report", r.violations.len() - 20);
        }
        let _ = writeln!(out, "  node logs: {}", r.logs.display());
        if let Some(db) = &r.database {
            let _ = writeln!(out, "  database kept: {db}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.0);
        assert_eq!(percentile(&v, 99.0), 4.0);
        assert_eq!(percentile(&[5.0], 50.0), 5.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
