//! The room admin API, for operators (the API key or a `roomAdmin` token, in dev mode too):
//! list rooms and their participants, remove a participant, mute one, change one's grants
//! live, end a call, close a room. Each request goes to the node that runs the room, wherever
//! it is; each action is written to `audit_log` with an `admin.action` event, and the
//! participant concerned sees what happened (`removed`, `muted_by_admin`, `grants_changed`).

use super::*;
use crate::routing::{self, RouteError};
use switchboard_actors::ErrorCode;
use switchboard_actors::room::admin::{AdminAction, AdminDone};

/// The routes under `/api/rooms` and `/api/audit`.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/rooms", get(list))
        .route("/api/rooms/{id}", get(read))
        .route("/api/rooms/{id}/end", post(end_call))
        .route("/api/rooms/{id}/close", post(close))
        .route("/api/rooms/{id}/participants/{peer}/remove", post(remove))
        .route("/api/rooms/{id}/participants/{peer}/mute", post(mute))
        .route("/api/rooms/{id}/participants/{peer}/grants", post(grants))
        .route("/api/audit", get(audit))
}

/// Who the operator is: `api_key`, or the admin token's user.
fn operator(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
    if is_api_key(app, headers) {
        return Ok("api_key".into());
    }
    let c = claims(app, headers)?;
    if c.grants.room_admin {
        return Ok(c.sub);
    }
    Err(ApiError(
        StatusCode::FORBIDDEN,
        "forbidden",
        "the room admin API needs the API key or a roomAdmin token".into(),
    ))
}

fn route_error((code, message): RouteError) -> ApiError {
    let status = match code {
        ErrorCode::PeerNotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidMessage => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, code.as_str(), message)
}

/// Carries out `action` where the room runs; `Ok(None)` when it runs nowhere.
async fn act(app: &App, room: &str, action: AdminAction) -> Result<Option<AdminDone>, ApiError> {
    if !valid_room_id(room) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "invalid_room_id", "not a room id".into()));
    }
    routing::admin(app, &RoomId::new(room), action).await.map_err(route_error)
}

/// A session-targeted action on a room that runs nowhere: nobody is in it.
fn nobody(peer: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "peer_not_found", format!("no session {peer}: nobody is in the room"))
}

async fn record(app: &App, actor: &str, action: &str, room: &str, target: Option<&str>, detail: Value) -> Value {
    match app.store.audit(actor, action, room, target, &detail).await {
        Ok(entry) => json!({"auditId": entry.id, "done": detail}),
        Err(e) => {
            // The action happened; the record of it did not: said loudly, and in the answer.
            tracing::error!(room_id = %room, %action, error = %e, "admin action not audited");
            json!({"auditId": null, "done": detail})
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    after: Option<String>,
}

/// The rooms that run now (in a cluster, every node's, from the lease table).
async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    operator(&app, &headers)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = q.after.unwrap_or_default();
    let rooms: Vec<Value> = if app.cluster.is_some() {
        let leases = app.store.live_leases(&after, limit).await.map_err(internal)?;
        leases.into_iter().map(|(room, node, _)| json!({"roomId": room, "nodeId": node})).collect()
    } else {
        let mut ids = match app.rooms.call(RoomSupervisorMsg::List, Some(Duration::from_secs(5))).await {
            Ok(CallResult::Success(ids)) => ids,
            _ => Vec::new(),
        };
        ids.sort();
        ids.iter()
            .filter(|r| r.as_str() > after.as_str())
            .take(limit as usize)
            .map(|r| json!({"roomId": r, "nodeId": app.config.node_id}))
            .collect()
    };
    Ok(Json(json!({"rooms": rooms})).into_response())
}

/// A room as the node running it sees it: participants (with their sessions), call status.
async fn read(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    operator(&app, &headers)?;
    match act(&app, &id, AdminAction::Info).await? {
        Some(AdminDone::Info(json)) => {
            let v: Value = serde_json::from_str(&json).map_err(internal)?;
            Ok(Json(v).into_response())
        }
        _ => match app.store.room(&id).await.map_err(internal)? {
            Some(row) => {
                Ok(Json(json!({"roomId": row.room_id, "callStatus": row.call_status, "participants": []}))
                    .into_response())
            }
            None => Err(ApiError(StatusCode::NOT_FOUND, "room_not_found", format!("no room {id}"))),
        },
    }
}

async fn end_call(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let actor = operator(&app, &headers)?;
    let done = act(&app, &id, AdminAction::EndCall { reason: "ended_by_admin".into() }).await?;
    let ended = matches!(done, Some(AdminDone::CallEnded));
    Ok(Json(record(&app, &actor, "end_call", &id, None, json!({"callEnded": ended})).await).into_response())
}

async fn close(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let actor = operator(&app, &headers)?;
    let removed = match act(&app, &id, AdminAction::Close).await? {
        Some(AdminDone::Closed(n)) => n,
        _ => 0,
    };
    Ok(Json(record(&app, &actor, "close", &id, None, json!({"removed": removed})).await).into_response())
}

async fn remove(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, peer)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let actor = operator(&app, &headers)?;
    act(&app, &id, AdminAction::Remove { peer: peer.clone() }).await?.ok_or_else(|| nobody(&peer))?;
    Ok(Json(record(&app, &actor, "remove", &id, Some(&peer), json!({"removed": true})).await).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteRequest {
    #[serde(default = "yes")]
    audio: bool,
    #[serde(default)]
    video: bool,
}

fn yes() -> bool {
    true
}

async fn mute(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, peer)): Path<(String, String)>,
    body: Body<MuteRequest>,
) -> Result<Response, ApiError> {
    let actor = operator(&app, &headers)?;
    let MuteRequest { audio, video } = body.0;
    let action = AdminAction::Mute { peer: peer.clone(), audio, video };
    let media = match act(&app, &id, action).await?.ok_or_else(|| nobody(&peer))? {
        AdminDone::Muted(media) => serde_json::from_str::<Value>(&media).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let detail = json!({"audio": audio, "video": video, "media": media});
    Ok(Json(record(&app, &actor, "mute", &id, Some(&peer), detail).await).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsRequest {
    grants: crate::auth::Grants,
}

/// New grants for a participant's connection, from now on (its token is unchanged: a refresh
/// or a new connection brings the token's own grants back).
async fn grants(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, peer)): Path<(String, String)>,
    body: Body<GrantsRequest>,
) -> Result<Response, ApiError> {
    let actor = operator(&app, &headers)?;
    let conn = match act(&app, &id, AdminAction::Locate { peer: peer.clone() }).await?.ok_or_else(|| nobody(&peer))? {
        AdminDone::Located(conn) => conn,
        _ => return Err(nobody(&peer)),
    };
    let grants = serde_json::to_string(&body.0.grants).map_err(internal)?;
    if !app.edge.set_grants(&switchboard_actors::ConnId::new(conn), &grants) {
        let message = "the participant's connection is not reachable now; try again".to_owned();
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message));
    }
    let detail = json!({"grants": serde_json::from_str::<Value>(&grants).unwrap_or(Value::Null)});
    Ok(Json(record(&app, &actor, "grants", &id, Some(&peer), detail).await).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    operator(&app, &headers)?;
    let entries =
        app.store.audit_log(q.room.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000)).await.map_err(internal)?;
    Ok(Json(json!({"entries": entries})).into_response())
}
