//! The operator console's data. `GET /api/console/overview` is one JSON document: this node,
//! the cluster's members and their health, the room → node map and rooms per node,
//! connection, message, error, failover and room-move totals, join and relay latency, the
//! snapshot queue and the latest events. `GET /api/console/stream` sends the same document
//! every two seconds as server-sent events (the page turns successive totals into rates).
//!
//! Both need the API key or an admin token outside dev mode. The stream also takes the token
//! as `?token=`, since a browser's `EventSource` cannot send an Authorization header.

use super::*;
use crate::telemetry::exposition::Exposition;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::collections::BTreeMap;

/// Rooms listed in one overview; `roomsTotal` counts them all.
const ROOMS_LISTED: u32 = 500;
/// Events listed in one overview.
const EVENTS_LISTED: u32 = 25;
/// How often the stream sends an overview.
const STREAM_EVERY: Duration = Duration::from_secs(2);

/// The routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/api/console/overview", get(read_overview)).route("/api/console/stream", get(stream))
}

async fn read_overview(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize_operator(&app, &headers)?;
    Ok(Json(overview(&app).await?).into_response())
}

#[derive(Deserialize)]
struct StreamQuery {
    token: Option<String>,
}

async fn stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    match &q.token {
        Some(token) if !app.dev_mode => {
            let claims =
                app.authority.verify(token).map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.code(), e.to_string()))?;
            if !claims.grants.room_admin {
                return Err(ApiError(StatusCode::FORBIDDEN, "forbidden", "the console needs an admin token".into()));
            }
        }
        _ => authorize_operator(&app, &headers)?,
    }
    let events = futures_util::stream::unfold((app, true), |(app, first)| async move {
        if !first {
            tokio::time::sleep(STREAM_EVERY).await;
        }
        let event = match overview(&app).await {
            Ok(v) => Event::default().event("overview").data(v.to_string()),
            Err(ApiError(_, code, _)) => Event::default().event("error").data(json!({"code": code}).to_string()),
        };
        Some((Ok::<_, std::convert::Infallible>(event), (app, false)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

fn ms(seconds: Option<f64>) -> Value {
    match seconds {
        Some(s) if s.is_finite() => json!((s * 100_000.0).round() / 100.0),
        Some(_) => json!("> 1000"),
        None => Value::Null,
    }
}

/// The whole console document.
async fn overview(app: &App) -> Result<Value, ApiError> {
    let me = (app.hello)();
    let members = match &app.cluster {
        Some(cluster) => cluster.members(&me),
        None => vec![switchboard_cluster::MemberView::own(&me, String::new())],
    };
    // In a cluster the lease table is the room map; a single node lists its own rooms.
    let rooms: Vec<(String, String)> = if app.cluster.is_some() {
        let leases = app.store.live_leases("", ROOMS_LISTED).await.map_err(internal)?;
        leases.into_iter().map(|(room, node, _)| (room, node)).collect()
    } else {
        let mut ids = match app.rooms.call(RoomSupervisorMsg::List, Some(Duration::from_secs(2))).await {
            Ok(CallResult::Success(ids)) => ids,
            _ => Vec::new(),
        };
        ids.sort();
        ids.truncate(ROOMS_LISTED as usize);
        ids.into_iter().map(|r| (r.as_str().to_owned(), me.node_id.clone())).collect()
    };
    let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, node) in &rooms {
        *per_node.entry(node).or_default() += 1;
    }
    let stats = match app.rooms.call(RoomSupervisorMsg::Stats, Some(Duration::from_secs(2))).await {
        Ok(CallResult::Success(s)) => s,
        _ => RoomStats::default(),
    };
    let m = Exposition::parse(&app.metrics.render());
    let [queued, dispatched, scored] = app.store.snapshot_job_counts().await.map_err(internal)?;
    let events = app.store.recent_events(EVENTS_LISTED).await.map_err(internal)?;
    Ok(json!({
        "at": switchboard_actors::ports::now_ms(),
        "node": {
            "nodeId": me.node_id,
            "version": env!("CARGO_PKG_VERSION"),
            "clustered": app.cluster.is_some(),
            "devMode": app.dev_mode,
        },
        "members": members,
        "rooms": rooms.iter().map(|(room, node)| json!({"roomId": room, "nodeId": node})).collect::<Vec<_>>(),
        "roomsTotal": rooms.len(),
        "roomsPerNode": per_node,
        "here": {
            "rooms": stats.rooms,
            "participants": stats.participants,
            "connections": me.connections,
        },
        "totals": {
            "messages": m.total("switchboard_signaling_messages_total"),
            "messagesByType": m.by_label("switchboard_signaling_messages_total", "type"),
            "errors": m.total("switchboard_signaling_errors_total"),
            "errorsByCode": m.by_label("switchboard_signaling_errors_total", "code"),
            "joins": m.total("switchboard_room_joins_total"),
            "resumes": m.total("switchboard_resumes_total"),
            "failovers": m.total("switchboard_orphan_rooms_adopted_total"),
            "roomMoves": m.total("switchboard_rehomes_total"),
            "leasesLost": m.total("switchboard_lease_lost_total"),
            "actorRestarts": m.total("switchboard_actor_restarts_total"),
            "slowConsumersClosed": m.total("switchboard_slow_consumers_closed_total"),
            "fallbacks": m.total("switchboard_fallbacks_total"),
        },
        "latency": {
            "joinP50Ms": ms(m.quantile("switchboard_join_seconds", 0.5)),
            "joinP99Ms": ms(m.quantile("switchboard_join_seconds", 0.99)),
            "relayP50Ms": ms(m.quantile("switchboard_relay_seconds", 0.5)),
            "relayP99Ms": ms(m.quantile("switchboard_relay_seconds", 0.99)),
        },
        "snapshots": {"queued": queued, "dispatched": dispatched, "scored": scored},
        "events": events
            .into_iter()
            .map(|(id, kind, room, at)| json!({"id": id, "kind": kind, "roomId": room, "at": at}))
            .collect::<Vec<_>>(),
    }))
}
