//! What every client sent, had acknowledged and received, and the delivery invariants over
//! it: every acknowledged message delivered exactly once, in the sender's order.
//!
//! A stream is one sender's messages to one receiver (by user, so a stream survives a
//! session that had to be joined afresh). Message ids are the sender's counter, so they rise
//! in the order sent.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

/// Shared by every client task.
pub struct Ledger {
    pub started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    streams: BTreeMap<(String, String), Stream>,
    /// Per client: (sent, acknowledged) instants of every acknowledged message.
    acks: BTreeMap<String, Vec<(Instant, Instant)>>,
    /// Per client: session ids it was given (joined afresh or not).
    sessions: BTreeMap<String, Vec<String>>,
    counters: BTreeMap<&'static str, u64>,
    violations: Vec<String>,
    journal: Vec<String>,
    /// Per client: the node (HTTP address) it is connected to now.
    nodes: BTreeMap<String, String>,
}

#[derive(Default)]
struct Stream {
    sent: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    last_delivered: Option<u64>,
}

/// The delivery totals of a run.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Totals {
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub delivered_unacked: u64,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger { started: Instant::now(), inner: Mutex::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("ledger"))
    }

    pub fn sent(&self, from: &str, to: &str, id: u64) {
        self.with(|i| {
            i.streams.entry((from.into(), to.into())).or_default().sent.insert(id);
        });
    }

    pub fn acked(&self, from: &str, to: &str, id: u64, sent_at: Instant) {
        self.with(|i| {
            if i.streams.entry((from.into(), to.into())).or_default().acked.insert(id) {
                i.acks.entry(from.into()).or_default().push((sent_at, Instant::now()));
            }
        });
    }

    /// A relayed message reached `to`; a repeat or a step back is a violation at once.
    pub fn delivered(&self, from: &str, to: &str, id: u64) {
        self.with(|i| {
            let s = i.streams.entry((from.into(), to.into())).or_default();
            let violation = if !s.delivered.insert(id) {
                Some(format!("duplicate: {from} -> {to} message {id} delivered again"))
            } else if s.last_delivered.is_some_and(|last| id < last) {
                Some(format!("out of order: {from} -> {to} message {id} after {:?}", s.last_delivered))
            } else {
                None
            };
            s.last_delivered = Some(s.last_delivered.map_or(id, |l| l.max(id)));
            if let Some(v) = violation {
                let t = self.started.elapsed().as_secs_f64();
                if i.journal.len() < 20_000 {
                    i.journal.push(format!("{t:9.3} {v}"));
                }
                let key = if v.starts_with("duplicate") { "duplicated" } else { "out_of_order" };
                *i.counters.entry(key).or_default() += 1;
                push_violation(i, v);
            }
        });
    }

    /// Records which node a client is connected to now.
    pub fn connected_to(&self, client: &str, node: &str) {
        self.with(|i| i.nodes.insert(client.into(), node.into()));
    }

    /// The clients connected to `node` now.
    pub fn clients_of(&self, node: &str) -> Vec<String> {
        self.with(|i| i.nodes.iter().filter(|(_, n)| n.as_str() == node).map(|(c, _)| c.clone()).collect())
    }

    pub fn session(&self, client: &str, session: &str) {
        self.with(|i| i.sessions.entry(client.into()).or_default().push(session.into()));
    }

    /// A line in the run's journal (connections, resumes, faults), with the time since start.
    pub fn note(&self, line: String) {
        let t = self.started.elapsed().as_secs_f64();
        self.with(|i| {
            if i.journal.len() < 20_000 {
                i.journal.push(format!("{t:9.3} {line}"));
            }
        });
    }

    pub fn journal(&self) -> Vec<String> {
        self.with(|i| i.journal.clone())
    }

    pub fn count(&self, what: &'static str) {
        self.with(|i| *i.counters.entry(what).or_default() += 1);
    }

    pub fn violation(&self, what: String) {
        self.with(|i| push_violation(i, what));
    }

    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        self.with(|i| i.counters.clone())
    }

    pub fn sessions(&self) -> BTreeMap<String, Vec<String>> {
        self.with(|i| i.sessions.clone())
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|i| i.violations.clone())
    }

    /// Messages still on their way: sent but not acknowledged, or acknowledged but not
    /// delivered.
    pub fn outstanding(&self) -> usize {
        self.with(|i| {
            i.streams
                .values()
                .map(|s| s.sent.difference(&s.acked).count() + s.acked.difference(&s.delivered).count())
                .sum()
        })
    }

    /// Checks that every acknowledged message arrived; returns the totals.
    pub fn settle(&self) -> Totals {
        self.with(|i| {
            let mut t = Totals {
                duplicated: i.counters.get("duplicated").copied().unwrap_or(0),
                out_of_order: i.counters.get("out_of_order").copied().unwrap_or(0),
                ..Totals::default()
            };
            let mut lost = Vec::new();
            for ((from, to), s) in &i.streams {
                t.sent += s.sent.len() as u64;
                t.acked += s.acked.len() as u64;
                t.delivered += s.delivered.len() as u64;
                t.delivered_unacked += s.delivered.difference(&s.acked).count() as u64;
                let missing: Vec<u64> = s.acked.difference(&s.delivered).copied().collect();
                t.lost += missing.len() as u64;
                if !missing.is_empty() {
                    lost.push(format!("lost: {from} -> {to} acknowledged but never delivered: {missing:?}"));
                }
            }
            for v in lost {
                push_violation(i, v);
            }
            t
        })
    }

    /// For a fault at `at`: per client of `clients`, the time from `at` to the first acknowledgement of a
    /// message sent at or after `at` (before `until`); `None` for a client that had none.
    pub fn recovery(&self, at: Instant, until: Instant, clients: &[String]) -> BTreeMap<String, Option<f64>> {
        self.with(|i| {
            clients
                .iter()
                .map(|client| {
                    let first = i
                        .acks
                        .get(client)
                        .into_iter()
                        .flatten()
                        .filter(|(sent, acked)| *sent >= at && *acked <= until)
                        .map(|(_, acked)| acked.duration_since(at).as_secs_f64())
                        .reduce(f64::min);
                    (client.clone(), first)
                })
                .collect()
        })
    }
}

impl Ledger {
    /// Per client of `clients`: its longest time without an acknowledgement between `at` and
    /// `until` (from `at` to the first, between two, and from the last to `until`). A fault
    /// that takes effect late (a database restart bites when leases come up for renewal) is
    /// measured as well as one that bites at once.
    pub fn outage(&self, at: Instant, until: Instant, clients: &[String]) -> BTreeMap<String, f64> {
        self.with(|i| {
            clients
                .iter()
                .map(|client| {
                    let mut last = at;
                    let mut longest = 0.0f64;
                    for (_, acked) in i.acks.get(client).into_iter().flatten() {
                        if *acked <= at || *acked > until {
                            continue;
                        }
                        longest = longest.max(acked.duration_since(last).as_secs_f64());
                        last = *acked;
                    }
                    longest = longest.max(until.duration_since(last).as_secs_f64());
                    (client.clone(), longest)
                })
                .collect()
        })
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

fn push_violation(i: &mut Inner, v: String) {
    // The first few hundred are enough to debug with; the counters keep the totals.
    if i.violations.len() < 300 {
        i.violations.push(v);
    }
}
