//! The single-owner invariant, observed from outside: every node is asked, over and over,
//! which rooms it serves (`GET /api/cluster/hosted`; a room asked checks first that its node's
//! lease still holds the term it took the room under, and stops rather than answer if not).
//! Each answer says, on the host's wall clock, when the room's ownership was granted (no later
//! than `sinceMs`) and when the room last checked it (`checkedAtMs`). Two owners at once means: a node still serving a room at a time after
//! another node was granted a newer ownership of it (or two nodes serving the same epoch).
//! Overlaps shorter than one grant's round trip to the database are below what this can see;
//! so is a room that acts between polls without being asked (the database's fencing covers
//! its writes, the node lease's local deadline its deliveries). Only the checked rooms
//! (`chaos-...`) are asked, not the idle ones of a run at size.

use crate::nodes::Directory;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One node's claim on one room.
#[derive(Clone, Debug)]
struct Claim {
    node: String,
    epoch: i64,
    since_ms: i64,
    checked_at_ms: i64,
}

/// Everything seen, per room.
#[derive(Default)]
pub struct Owners {
    claims: Mutex<BTreeMap<String, Vec<Claim>>>,
    polls: Mutex<u64>,
}

impl Owners {
    /// Polls every live node every `every` until `stop` is set.
    pub async fn watch(self: Arc<Self>, directory: Arc<Directory>, every: Duration, stop: Arc<tokio::sync::Notify>) {
        let http = reqwest::Client::builder().timeout(Duration::from_millis(800)).build().expect("http client");
        loop {
            for (node, addr) in directory.live() {
                let Ok(resp) = http.get(format!("http://{addr}/api/cluster/hosted?prefix=chaos-")).send().await else {
                    continue;
                };
                let Ok(v) = resp.json::<Value>().await else { continue };
                self.record(&node, &v);
            }
            *self.polls.lock().expect("polls") += 1;
            tokio::select! {
                _ = stop.notified() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    fn record(&self, node: &str, v: &Value) {
        let mut claims = self.claims.lock().expect("claims");
        for room in v["rooms"].as_array().into_iter().flatten() {
            let (Some(id), Some(epoch), Some(since_ms), Some(checked_at_ms)) = (
                room["roomId"].as_str(),
                room["lease"]["epoch"].as_i64(),
                room["lease"]["sinceMs"].as_i64(),
                room["lease"]["checkedAtMs"].as_i64(),
            ) else {
                continue;
            };
            let list = claims.entry(id.to_owned()).or_default();
            // Keep the latest check per (node, epoch): it is the strongest claim.
            match list.iter_mut().find(|c| c.node == node && c.epoch == epoch) {
                Some(c) => c.checked_at_ms = c.checked_at_ms.max(checked_at_ms),
                None => list.push(Claim { node: node.to_owned(), epoch, since_ms, checked_at_ms }),
            }
        }
    }

    /// Rooms seen with two owners at once, described; and how many polls were made.
    pub fn check(&self) -> (Vec<String>, u64) {
        let claims = self.claims.lock().expect("claims");
        let mut found = Vec::new();
        for (room, list) in claims.iter() {
            for a in list {
                for b in list {
                    if a.node == b.node {
                        continue;
                    }
                    if a.epoch == b.epoch && a.node < b.node {
                        found.push(format!("two owners: {room} epoch {} served by {} and {}", a.epoch, a.node, b.node));
                    } else if b.epoch > a.epoch && b.since_ms < a.checked_at_ms {
                        found.push(format!(
                            "two owners: {room} still served by {} (epoch {}) at {} ms, after {} took epoch {} by {} ms",
                            a.node, a.epoch, a.checked_at_ms, b.node, b.epoch, b.since_ms
                        ));
                    }
                }
            }
        }
        (found, *self.polls.lock().expect("polls"))
    }

    /// How many distinct (room, epoch) ownerships were seen.
    pub fn ownerships(&self) -> usize {
        self.claims.lock().expect("claims").values().map(Vec::len).sum()
    }
}
