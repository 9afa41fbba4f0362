//! The failure detector: every interval, an RPC to each connected peer's node agent. An
//! answer marks the peer up and records the round trip; silence past the timeout marks it
//! down and kills its sessions, which also cuts off a frozen process until it comes back and
//! rejoins through the dialer. A peer signed with another secret is refused.
//!
//! Silence is judged on this process's own running time: when this process itself was stopped
//! for a while (SIGSTOP, a paused VM) for less than the timeout, the asks that timed out
//! meanwhile say nothing about the peers, and nobody is declared down on them (the peers, who
//! kept running, judge this node; its own rooms are fenced by its node lease). A stop of the
//! timeout or more is judged as before: the peers have declared this node down by then.

use crate::membership::{MemberState, SharedTable, lock};
use crate::node_agent::{AgentMsg, HelloSource, NodeHello, agent_group};
use ractor::ActorRef;
use ractor::rpc::CallResult;
use std::time::{Duration, Instant};

async fn ask(node_id: String, timeout: Duration) -> (String, Option<(NodeHello, Duration)>) {
    let Some(cell) = ractor::pg::get_members(&agent_group(&node_id)).into_iter().next() else {
        return (node_id, None);
    };
    let agent: ActorRef<AgentMsg> = cell.into();
    let started = Instant::now();
    let answer = match agent.call(AgentMsg::Hello, Some(timeout)).await {
        Ok(CallResult::Success(hello)) => Some((hello.0, started.elapsed())),
        _ => None,
    };
    (node_id, answer)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// How long this process was stopped around a heartbeat round, beyond what the round should
/// take: the round began `late` after the previous one ended (normally one interval) and took
/// `took` (normally at most one interval, the asks' timeout).
fn stopped_for(late: Duration, took: Duration, interval: Duration) -> Duration {
    late.saturating_sub(interval).max(took.saturating_sub(interval))
}

/// Whether a round's silences can be held against the peers: this process was not stopped
/// around it for longer than one interval and less than the timeout.
fn judges_peers(stopped: Duration, interval: Duration, timeout: Duration) -> bool {
    stopped <= interval || stopped >= timeout
}

pub(crate) async fn run(table: SharedTable, me: HelloSource, interval: Duration, timeout: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_round = Instant::now();
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let peers: Vec<String> = lock(&table)
            .members
            .iter()
            .filter(|(_, m)| !m.sessions.is_empty() && m.state != MemberState::Refused)
            .map(|(id, _)| id.clone())
            .collect();
        let mut asks = tokio::task::JoinSet::new();
        for id in peers {
            asks.spawn(ask(id, interval));
        }
        let mine = me();
        let mut answers = Vec::new();
        while let Some(Ok(answer)) = asks.join_next().await {
            answers.push(answer);
        }
        let now = Instant::now();
        let stopped = stopped_for(started.duration_since(last_round), now.duration_since(started), interval);
        let judging = judges_peers(stopped, interval, timeout);
        if !judging {
            tracing::info!(
                stopped_ms = stopped.as_millis() as u64,
                "this node was stopped; its heartbeat judges no peer this round"
            );
        }
        last_round = now;
        let mut t = lock(&table);
        for (id, answer) in answers {
            let Some(m) = t.members.get_mut(&id) else { continue };
            match answer {
                Some((hello, rtt)) if hello.secret_fingerprint != mine.secret_fingerprint => {
                    if m.state != MemberState::Refused {
                        tracing::error!(node_id = %id, "peer refused: its token signing secret differs from this cluster's");
                    }
                    m.state = MemberState::Refused;
                    m.refused_because = Some("its token signing secret differs from this cluster's".into());
                    m.hello = Some(hello);
                    m.rtt = Some(rtt);
                    m.kill_sessions();
                }
                Some((hello, rtt)) => {
                    if m.state != MemberState::Up {
                        tracing::info!(node_id = %id, rtt_us = rtt.as_micros() as u64, "peer up");
                    }
                    metrics::histogram!("switchboard_cluster_heartbeat_seconds").record(rtt.as_secs_f64());
                    m.state = MemberState::Up;
                    m.hello = Some(hello);
                    m.rtt = Some(rtt);
                    m.last_ok = Some(now);
                    m.last_ok_unix_ms = Some(unix_ms());
                }
                None => {
                    let silent_since = m.last_ok.unwrap_or(m.joined_at);
                    if judging && now.duration_since(silent_since) >= timeout {
                        tracing::warn!(node_id = %id, silent_ms = now.duration_since(silent_since).as_millis() as u64, "peer down: no heartbeat answer");
                        m.state = MemberState::Down;
                        m.kill_sessions();
                    } else if m.state == MemberState::Up {
                        m.state = MemberState::Suspect;
                    }
                }
            }
        }
        // Peers without a link: down once they have been unreachable for one interval (a crash
        // closes the TCP link at once; a flap during connection elections heals within it).
        for (id, m) in t.members.iter_mut() {
            if m.sessions.is_empty()
                && matches!(m.state, MemberState::Suspect | MemberState::Joining | MemberState::Up)
                && m.sessionless_since.is_some_and(|s| now.duration_since(s) >= interval)
            {
                tracing::warn!(node_id = %id, "peer down: link closed");
                m.state = MemberState::Down;
            }
        }
        for state in MemberState::ALL {
            let n = t.members.values().filter(|m| m.state == state).count() + usize::from(state == MemberState::Up);
            metrics::gauge!("switchboard_cluster_members", "state" => state.as_str()).set(n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(500);
    const TIMEOUT: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_round_on_time_judges_the_peers() {
        let stopped = stopped_for(ms(500), ms(480), INTERVAL);
        assert_eq!(stopped, Duration::ZERO);
        assert!(judges_peers(stopped, INTERVAL, TIMEOUT));
    }

    #[test]
    fn a_short_stop_of_this_process_judges_nobody() {
        // Stopped mid-round for 1.6 s: the asks' timeouts fired on waking.
        let stopped = stopped_for(ms(500), ms(2100), INTERVAL);
        assert_eq!(stopped, ms(1600));
        assert!(!judges_peers(stopped, INTERVAL, TIMEOUT));
        // Stopped between rounds.
        assert!(!judges_peers(stopped_for(ms(1900), ms(10), INTERVAL), INTERVAL, TIMEOUT));
    }

    #[test]
    fn a_stop_past_the_timeout_is_judged_as_before() {
        // The peers have declared this node down by then; it cuts its links as they did.
        assert!(judges_peers(stopped_for(ms(500), ms(4000), INTERVAL), INTERVAL, TIMEOUT));
    }
}
