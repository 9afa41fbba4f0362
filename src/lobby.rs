//! Lobbies: people wait (`lobby_join`) to be paired with someone, and two who match are put in
//! a fresh room together (`paired`, then the room's `joined`).
//!
//! The queue of each lobby is the `lobby_queue` table, and pairing is one transaction per
//! newcomer, serialized per lobby by the database (`store/lobby.rs`): any node's connections
//! wait in the same queue, nobody is paired twice or with themself, and among the matches of
//! a newcomer the one who has waited longest wins. The partner's connection, on whichever node,
//! is told through the edge and joins the room itself.

use crate::app::App;
use crate::store::lobby::Entered;
use switchboard_actors::ids::random_id;
use switchboard_actors::ports::StoreError;

/// Two people match when they share a tag or either has none.
pub fn tags_match(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|t| b.contains(t))
}

/// The room two people paired in `lobby` meet in: new, and theirs only (nobody else knows its
/// id, and its invitees are the two).
pub fn room_for(lobby: &str) -> String {
    let prefix: String = lobby.chars().take(40).collect();
    format!("lobby-{prefix}-{}", random_id())
}

/// What a `lobby_join` came to, for the connection that sent it.
#[derive(Debug)]
pub enum Outcome {
    /// Waiting, with this many people ahead.
    Waiting { ahead: usize },
    /// Paired: the partner's connection has been told; this one joins `room`.
    Paired { room: String },
    /// This user waits in this lobby already, on another connection.
    AlreadyWaiting,
}

/// `user` on connection `conn` enters `lobby`; when paired, the room is made (with the two as
/// its invitees) and the partner's connection told to join it.
pub async fn enter(app: &App, lobby: &str, user: &str, conn: &str, tags: &[String]) -> Result<Outcome, StoreError> {
    let edge = app.edge.clone();
    let alive = move |c: &str| {
        use switchboard_actors::ports::Edge;
        edge.is_connected(&switchboard_actors::ConnId::new(c))
    };
    let started = std::time::Instant::now();
    let entered = app.store.lobby_enter(lobby, user, conn, tags, app.config.lobby.grace, &alive).await?;
    match entered {
        Entered::Waiting { ahead } => {
            metrics::counter!("switchboard_lobby_waiting_total").increment(1);
            Ok(Outcome::Waiting { ahead })
        }
        Entered::AlreadyWaiting => Ok(Outcome::AlreadyWaiting),
        Entered::Paired { partner_user, partner_conn } => {
            let room = room_for(lobby);
            let policy = switchboard_actors::ports::RoomPolicy {
                max_participants: 2,
                invitees: Some(vec![
                    switchboard_actors::UserId::new(user),
                    switchboard_actors::UserId::new(&partner_user),
                ]),
            };
            app.store.create_room(&room, &policy, "lobby").await?;
            metrics::counter!("switchboard_lobby_pairs_total").increment(1);
            metrics::histogram!("switchboard_lobby_pairing_seconds").record(started.elapsed().as_secs_f64());
            tracing::debug!(%lobby, %room, "paired");
            app.edge.paired(&switchboard_actors::ConnId::new(&partner_conn), lobby, &room);
            Ok(Outcome::Paired { room })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn people_match_on_a_shared_tag_or_when_either_has_none() {
        assert!(tags_match(&tags(&["en", "chess"]), &tags(&["chess"])));
        assert!(!tags_match(&tags(&["en"]), &tags(&["fr"])));
        assert!(tags_match(&[], &tags(&["fr"])));
        assert!(tags_match(&tags(&["en"]), &[]));
        assert!(tags_match(&[], &[]));
    }

    #[test]
    fn lobby_rooms_are_fresh_valid_room_ids() {
        let (a, b) = (room_for("default"), room_for("default"));
        assert_ne!(a, b);
        assert!(switchboard_actors::ids::valid_room_id(&a), "{a}");
        assert!(switchboard_actors::ids::valid_room_id(&room_for(&"x".repeat(64))));
    }
}
