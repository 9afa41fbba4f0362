//! The node lease keeper: renews this node's lease a few times a second and moves the instant
//! until which the node's rooms may act (`switchboard_actors::node_lease`).
//!
//! One row per node, whatever the number of rooms: a room's ownership row is written only when
//! it changes hands. Safety ("never two owners") rests on two clocks agreeing in one direction:
//! a renewal asked at local instant `t` is granted by the database until `db_now + ttl`, where
//! `db_now` is no earlier than `t`; the node acts only until `t + ttl * 4/5` on its own
//! monotonic clock, so it stops before any other node can take its rooms, even after a freeze.
//! A term that lapses (renewal refused, or its instant passed without one) is never revived:
//! the keeper starts a new term, so the rooms of the old one are unowned at once everywhere.

use crate::app::App;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_actors::node_lease::NodeLease;

/// The instant until which a lease asked for at `asked`, for `ttl`, may be acted on.
pub fn valid_until(asked: Instant, ttl: Duration) -> Instant {
    asked + ttl * 4 / 5
}

/// How often the keeper renews: five times per lifetime, so that three renewals in a row may
/// fail (or be slow) before the node stops acting.
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / 5
}

/// How often a room runs its own check (see `RoomMsg::LeaseCheck`): no database work, so a
/// slow pace is enough; a room also checks the lease before every message it handles.
pub fn room_check_every(ttl: Duration) -> Duration {
    ttl.max(Duration::from_secs(1))
}

/// Renews this node's lease until the node stops.
pub async fn keep(app: Arc<App>) {
    let me = (app.hello)();
    let incarnation = me.incarnation.to_string();
    let ttl = app.config.cluster.lease_ttl;
    let lease = &app.node_lease;
    let mut ticker = tokio::time::interval(renew_every(ttl));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let term = lease.term();
        let asked = Instant::now();
        let renewed = tokio::time::timeout(ttl, app.store.renew_node_lease(&me.node_id, &incarnation, term, ttl)).await;
        match renewed {
            Ok(Ok(true)) => {
                if !lease.extend(term, valid_until(asked, ttl)) {
                    new_term(&app, lease, &me.node_id, &incarnation, "renewed after the lease had lapsed here").await;
                }
            }
            Ok(Ok(false)) => {
                lease.lose();
                new_term(&app, lease, &me.node_id, &incarnation, "the database no longer holds the term").await;
            }
            Ok(Err(e)) => {
                metrics::counter!("switchboard_node_lease_renew_failures_total").increment(1);
                tracing::warn!(error = %e, "node lease not renewed");
            }
            Err(_) => {
                metrics::counter!("switchboard_node_lease_renew_failures_total").increment(1);
                tracing::warn!("node lease renewal timed out");
            }
        }
        if lease.current().is_none() && lease.term() == term {
            new_term(&app, lease, &me.node_id, &incarnation, "the lease ran out before a renewal").await;
        }
    }
}

/// Begins a new term: every room of the old one stops (they see it at once), and their
/// ownership rows are dead in the database from the moment the new term is written.
async fn new_term(app: &App, lease: &NodeLease, node_id: &str, incarnation: &str, why: &str) {
    lease.lose();
    metrics::counter!("switchboard_node_lease_lapses_total").increment(1);
    let ttl = app.config.cluster.lease_ttl;
    for attempt in 0u32.. {
        let asked = Instant::now();
        match app.store.new_node_term(node_id, incarnation, ttl).await {
            Ok(Some(term)) => {
                lease.begin(term, valid_until(asked, ttl));
                tracing::warn!(term, why, "node lease lapsed; the node's rooms start again under a new term");
                return;
            }
            Ok(None) => {
                tracing::error!(node_id, "another process has taken this node's id; this node owns no rooms");
                return;
            }
            Err(e) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(error = %e, "new node lease term not written yet");
                }
                tokio::time::sleep(renew_every(ttl)).await;
            }
        }
    }
}
