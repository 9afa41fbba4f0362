//! The run's PostgreSQL database: made fresh for each run, and checked for consistency at
//! the end, once every client has left: no session left open, no session nobody was given,
//! every call ended, and the events outbox telling the same story as the tables.

use crate::idle::PREFIX;
use anyhow::{Context, Result};
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Creates `sb_chaos_<seed>_<random>` next to the database `base` names; returns its URL.
pub async fn fresh(base: &str, seed: u64) -> Result<String> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(base)
        .await
        .with_context(|| format!("the chaos suite needs PostgreSQL; could not connect to {base}"))?;
    let name = format!("sb_chaos_{seed}_{:08x}", rand::random::<u32>());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    let _ = conn.close().await;
    let (prefix, _) = base.rsplit_once('/').context("the database URL has no database path")?;
    Ok(format!("{prefix}/{name}"))
}

/// Drops a run's database (after a passing run; a failing run's database is kept to look at).
pub async fn drop_database(base: &str, url: &str) -> Result<()> {
    let name = url.rsplit('/').next().unwrap_or_default();
    let mut conn = sqlx::AnyConnection::connect(base).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
    Ok(())
}

/// Waits (at most `within`) until no session is open, then checks the database against the
/// sessions the clients were given. Returns the problems found. Idle rooms (`idle-...`, a run
/// at size) are not checked: their clients stay until the end.
pub async fn check(url: &str, given: &BTreeMap<String, Vec<String>>, within: Duration) -> Result<Vec<String>> {
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let started = Instant::now();
    let mut problems = Vec::new();
    loop {
        let open: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM sessions WHERE left_at IS NULL AND room_id NOT LIKE '{PREFIX}%'"
        ))
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
        if open == 0 {
            break;
        }
        if started.elapsed() > within {
            problems.push(format!("{open} sessions still open {within:?} after every client left"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let rows = sqlx::query(&format!("SELECT id, room_id FROM sessions WHERE room_id NOT LIKE '{PREFIX}%'"))
        .fetch_all(&mut conn)
        .await?;
    let stored: BTreeSet<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
    let handed: BTreeSet<String> = given.values().flatten().cloned().collect();
    for s in handed.difference(&stored) {
        problems.push(format!("session {s} was given to a client but is not in the database"));
    }
    for s in stored.difference(&handed) {
        problems.push(format!("session {s} is in the database but no client was given it"));
    }

    let open_calls: Vec<(String, String)> = sqlx::query(&format!(
        "SELECT room_id, status FROM call_sessions WHERE status <> 'ended' AND room_id NOT LIKE '{PREFIX}%'"
    ))
    .fetch_all(&mut conn)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    for (room, status) in open_calls {
        problems.push(format!("a call in {room} is still {status} after everyone left"));
    }

    // The outbox: per room, as many sessions closed as created, as many leaves as joins, and
    // one join per session row.
    let events = sqlx::query(&format!(
        "SELECT room_id, kind, COUNT(*) FROM events WHERE room_id NOT LIKE '{PREFIX}%' GROUP BY room_id, kind"
    ))
    .fetch_all(&mut conn)
    .await?;
    let mut counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for r in &events {
        counts.entry(r.get(0)).or_default().insert(r.get(1), r.get(2));
    }
    let mut per_room: BTreeMap<String, i64> = BTreeMap::new();
    for r in &rows {
        *per_room.entry(r.get(1)).or_default() += 1;
    }
    for (room, sessions) in &per_room {
        let c = counts.get(room).cloned().unwrap_or_default();
        let n = |k: &str| c.get(k).copied().unwrap_or(0);
        if n("participant.joined") != *sessions {
            problems
                .push(format!("{room}: {} participant.joined events for {sessions} sessions", n("participant.joined")));
        }
        if n("participant.left") != n("participant.joined") {
            problems.push(format!(
                "{room}: {} participant.left events for {} participant.joined",
                n("participant.left"),
                n("participant.joined")
            ));
        }
        if n("session.closed") != n("session.created") {
            problems.push(format!(
                "{room}: {} session.closed events for {} session.created",
                n("session.closed"),
                n("session.created")
            ));
        }
    }
    let _ = conn.close().await;
    Ok(problems)
}
