//! The failure detector: every interval, an RPC to each connected peer's node agent. An
//! answer marks the peer up and records the round trip; silence past the timeout marks it
//! down and kills its sessions, which also cuts off a frozen process until it comes back and
//! rejoins through the dialer. A peer signed with another secret is refused.

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

pub(crate) async fn run(table: SharedTable, me: HelloSource, interval: Duration, timeout: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
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
                    if now.duration_since(silent_since) >= timeout {
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
