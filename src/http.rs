//! The HTTP surface of a node: token minting, rooms, ICE servers, the signaling WebSocket,
//! metrics and health. Errors answer `{"type":"error","code":...,"message":...}`.

use crate::app::App;
use crate::auth::{Claims, Grants, MintRequest};
use crate::edge::connection;
use crate::ice::ice_servers;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ractor::rpc::CallResult;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchboard_actors::ids::valid_room_id;
use switchboard_actors::ports::RoomPolicy;
use switchboard_actors::room::RoomMsg;
use switchboard_actors::room_supervisor::{RoomStats, RoomSupervisorMsg};
use switchboard_actors::{RoomId, UserId};

mod admin;
mod appointments;
mod console;
pub mod cors;
mod snapshots;
mod web;
mod webhooks;

/// All routes.
pub fn router(app: Arc<App>) -> Router {
    let origins = cors::Origins::new(&app.config.http.allowed_origins, app.dev_mode);
    Router::new()
        .merge(webhooks::routes())
        .merge(appointments::routes())
        .merge(admin::routes())
        .merge(snapshots::routes())
        .merge(web::routes())
        .merge(console::routes())
        .route("/auth/token", post(mint_token))
        .route("/rooms", post(create_room))
        .route("/rooms/{id}", get(get_room))
        .route("/rooms/{id}/chat", get(get_chat))
        .route("/rooms/{id}/calls/{call}", get(get_call))
        .route("/ice-servers", get(get_ice_servers))
        .route("/lobbies/{id}", get(get_lobby))
        .route("/ws/signal", get(ws_signal))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/api/cluster", get(get_cluster))
        .route("/api/cluster/hosted", get(get_hosted))
        .route("/api/cluster/nodes/{id}/cordon", post(cordon))
        .route("/api/cluster/nodes/{id}/uncordon", post(uncordon))
        .layer(axum::middleware::from_fn_with_state(origins.clone(), cors::layer))
        .layer(axum::Extension(origins))
        .with_state(app)
}

/// An HTTP error with the protocol's error shape.
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"type": "error", "code": self.1, "message": self.2}))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "request failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the request failed; see the server log".into())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

fn same(a: &str, b: &str) -> bool {
    // Constant time in the length of the shorter input: no early exit on the first mismatch.
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_api_key(app: &App, headers: &HeaderMap) -> bool {
    matches!((bearer(headers), &app.config.auth.api_key), (Some(given), Some(key)) if same(given, key))
}

fn claims(app: &App, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError(StatusCode::UNAUTHORIZED, "token_missing", "send Authorization: Bearer <token>".into())
    })?;
    app.authority.verify(token).map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.code(), e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    user_id: String,
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    grants: Option<Grants>,
}

/// A JSON body whose rejection (bad JSON, wrong content type, unknown field) answers in the
/// protocol's error shape instead of the framework's plain text.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(ApiError(rejection.status(), "invalid_request", rejection.body_text())),
        }
    }
}

async fn mint_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<TokenRequest>,
) -> Result<Response, ApiError> {
    if !app.dev_mode && !is_api_key(&app, &headers) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "api_key_required",
            "send Authorization: Bearer <api key>".into(),
        ));
    }
    let req = body.0;
    if let Some(room) = &req.room_id
        && !valid_room_id(room)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "invalid_room_id",
            "roomId must be 1-64 characters of [A-Za-z0-9._:-]".into(),
        ));
    }
    let mint = MintRequest {
        user_id: req.user_id,
        room_id: req.room_id,
        name: req.display_name,
        ttl: req.ttl_seconds.map(Duration::from_secs),
        grants: req.grants,
    };
    let (token, expires_at) =
        app.authority.mint(mint).map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    Ok(Json(json!({"token": token, "expiresAt": expires_at})).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRoom {
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    max_participants: Option<u32>,
    #[serde(default)]
    invitees: Option<Vec<String>>,
}

async fn create_room(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<CreateRoom>,
) -> Result<Response, ApiError> {
    let creator = if is_api_key(&app, &headers) {
        "api".to_owned()
    } else {
        let c = claims(&app, &headers)?;
        if !c.grants.room_admin && !app.dev_mode {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                "creating rooms needs the API key or an admin token".into(),
            ));
        }
        c.sub
    };
    let req = body.0;
    let room_id = req.room_id.unwrap_or_else(switchboard_actors::ids::random_id);
    if !valid_room_id(&room_id) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "invalid_room_id",
            "roomId must be 1-64 characters of [A-Za-z0-9._:-]".into(),
        ));
    }
    let max = req.max_participants.unwrap_or(app.config.rooms.max_participants);
    if max == 0 || max > 1000 {
        return Err(ApiError(StatusCode::BAD_REQUEST, "invalid_request", "maxParticipants must be 1 to 1000".into()));
    }
    let policy =
        RoomPolicy { max_participants: max, invitees: req.invitees.map(|v| v.into_iter().map(UserId::from).collect()) };
    if !app.store.create_room(&room_id, &policy, &creator).await.map_err(internal)? {
        return Err(ApiError(StatusCode::CONFLICT, "room_exists", format!("room {room_id} exists already")));
    }
    let room = app.store.room(&room_id).await.map_err(internal)?;
    Ok((StatusCode::CREATED, Json(room)).into_response())
}

async fn authorize_room(app: &App, headers: &HeaderMap, room: &str) -> Result<(), ApiError> {
    if is_api_key(app, headers) {
        return Ok(());
    }
    let c = claims(app, headers)?;
    if c.grants.room_admin || app.store.is_member(room, &c.sub).await.map_err(internal)? {
        return Ok(());
    }
    Err(ApiError(StatusCode::FORBIDDEN, "forbidden", "only the room's participants may read it".into()))
}

async fn get_room(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize_room(&app, &headers, &id).await?;
    let Some(row) = app.store.room(&id).await.map_err(internal)? else {
        return Err(ApiError(StatusCode::NOT_FOUND, "room_not_found", format!("no room {id}")));
    };
    let live = app
        .rooms
        .call(|reply| RoomSupervisorMsg::Lookup { room: RoomId::new(&id), reply }, Some(Duration::from_secs(5)))
        .await;
    if let Ok(CallResult::Success(Some(room))) = live
        && let Ok(CallResult::Success(info)) = room.call(RoomMsg::Info, Some(Duration::from_secs(5))).await
    {
        return Ok(Json(info).into_response());
    }
    Ok(Json(json!({
        "roomId": row.room_id,
        "callStatus": row.call_status,
        "callId": row.call_id,
        "participants": [],
        "maxParticipants": row.max_participants,
        "invitees": row.invitees,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct ChatQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

async fn get_chat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ChatQuery>,
) -> Result<Response, ApiError> {
    authorize_room(&app, &headers, &id).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let messages = app.store.chat(&id, q.before, limit).await.map_err(internal)?;
    Ok(Json(json!({"roomId": id, "messages": messages})).into_response())
}

/// A call's quality aggregates (seed D4): samples, mean and worst score, time at each level,
/// fallbacks.
async fn get_call(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, call)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorize_room(&app, &headers, &id).await?;
    let policy = app.fallback_policy();
    let quality = app.store.call_quality(&id, &call, &policy).await.map_err(internal)?;
    let quality =
        quality.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no call {call} in room {id}")))?;
    Ok(Json(quality).into_response())
}

async fn get_ice_servers(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let c = claims(&app, &headers)?;
    let servers = ice_servers(&app.config.ice, &c.sub, crate::auth::unix_now());
    Ok(Json(json!({"iceServers": servers})).into_response())
}

/// A lobby's queue: how many wait and for how long (milliseconds, longest first). Any token
/// or the API key may read it; nobody's identity is in it.
async fn get_lobby(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !is_api_key(&app, &headers) {
        claims(&app, &headers)?;
    }
    let waits = app.store.lobby_waits(&id).await.map_err(internal)?;
    Ok(Json(json!({
        "lobby": id,
        "waiting": waits.len(),
        "longestWaitMs": waits.first().copied().unwrap_or(0),
        "waitsMs": waits,
        "waitLimitMs": app.config.lobby.wait.as_millis() as u64,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct SignalQuery {
    token: Option<String>,
}

/// A connection's read buffer: an idle connection keeps it, so it is small; a larger message
/// (a big SDP) takes a few more reads.
const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Bytes of frames a connection collects before writing them, within one batch.
const WRITE_BATCH_BYTES: usize = 16 * 1024;

async fn ws_signal(
    State(app): State<Arc<App>>,
    axum::Extension(origins): axum::Extension<cors::Origins>,
    headers: HeaderMap,
    Query(q): Query<SignalQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if app.is_shutting_down() {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is shutting down".into())
            .into_response();
    }
    // Browsers let any page open a WebSocket to any host, with no CORS preflight: the `Origin`
    // header is the only sign of which site's page asks, so the node decides here which sites
    // may build on it (clients that are not browser pages send none and are not concerned).
    if !origins.may_open_socket(&headers) {
        metrics::counter!("switchboard_signaling_errors_total", "code" => "origin_forbidden").increment(1);
        return ApiError(
            StatusCode::FORBIDDEN,
            "origin_forbidden",
            "pages of this origin may not open the signaling WebSocket; the node's http.allowed_origins lists those that may"
                .into(),
        )
        .into_response();
    }
    let limit = app.config.limits.max_message_bytes;
    let ws = ws
        .read_buffer_size(READ_BUFFER_BYTES)
        // Frames fed in one batch collect up to this much before a write; a flush ends the
        // batch. (The buffer keeps its largest size, so it stays small.)
        .write_buffer_size(WRITE_BATCH_BYTES)
        .max_write_buffer_size(WRITE_BATCH_BYTES + 4 * limit)
        .max_message_size(limit)
        .max_frame_size(limit);
    let token = q.token.or_else(|| bearer(&headers).map(str::to_owned));
    let verified = match token {
        None => Err(("token_missing", "connect with ?token=<token> or Authorization: Bearer <token>".to_owned())),
        Some(t) => app.authority.verify(&t).map_err(|e| (e.code(), e.to_string())),
    };
    // Browsers cannot read the status of a failed upgrade, so a bad token is reported in
    // band: the socket opens, carries one error frame and closes with 1008.
    match verified {
        Ok(claims) => ws.on_upgrade(move |socket| connection::run(app, claims, socket)),
        Err((code, message)) => {
            metrics::counter!("switchboard_signaling_errors_total", "code" => code).increment(1);
            ws.on_upgrade(move |socket| async move { connection::refuse(socket, code, &message).await })
        }
    }
}

async fn get_metrics(State(app): State<Arc<App>>) -> Response {
    let stats = match app.rooms.call(RoomSupervisorMsg::Stats, Some(Duration::from_secs(2))).await {
        Ok(CallResult::Success(s)) => s,
        _ => RoomStats::default(),
    };
    metrics::gauge!("switchboard_rooms_active").set(stats.rooms as f64);
    metrics::gauge!("switchboard_room_participants").set(stats.participants as f64);
    if app.cluster.is_some() {
        // In a cluster every running room holds its lease.
        metrics::gauge!("switchboard_leases_held").set(stats.rooms as f64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if app.store.ping().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

#[derive(Deserialize)]
struct ClusterQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after: Option<String>,
}

/// The cluster views are for operators: the API key or an admin token (open in dev mode).
fn authorize_operator(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if !is_api_key(app, headers) && !app.dev_mode {
        let c = claims(app, headers)?;
        if !c.grants.room_admin {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the cluster view needs the API key or an admin token".into(),
            ));
        }
    }
    Ok(())
}

/// The operator view of the cluster: members with their health, and the rooms hosted here.
async fn get_cluster(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ClusterQuery>,
) -> Result<Response, ApiError> {
    authorize_operator(&app, &headers)?;
    let me = (app.hello)();
    let members = match &app.cluster {
        Some(cluster) => cluster.members(&me),
        None => vec![switchboard_cluster::MemberView::own(&me, String::new())],
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = q.after.clone().unwrap_or_default();
    // In a cluster the lease table is the room map; a single node lists its own rooms.
    let page: Vec<Value> = if app.cluster.is_some() {
        let leases = app.store.live_leases(&after, limit as u32).await.map_err(internal)?;
        leases.into_iter().map(|(room, node, epoch)| json!({"roomId": room, "nodeId": node, "epoch": epoch})).collect()
    } else {
        let mut rooms = match app.rooms.call(RoomSupervisorMsg::List, Some(Duration::from_secs(5))).await {
            Ok(CallResult::Success(rooms)) => rooms,
            _ => Vec::new(),
        };
        rooms.sort();
        rooms
            .iter()
            .filter(|r| r.as_str() > after.as_str())
            .take(limit)
            .map(|r| json!({"roomId": r, "nodeId": me.node_id}))
            .collect()
    };
    let next =
        (page.len() == limit).then(|| page.last().and_then(|r| r["roomId"].as_str()).map(str::to_owned)).flatten();
    // Each member with what placement sees of it: its load, its node lease, its cordon, and
    // whether it takes new rooms now.
    let takers: Vec<String> = crate::placement::candidates(&app).into_iter().map(|(n, _)| n.to_string()).collect();
    let members: Vec<Value> = members
        .into_iter()
        .map(|m| {
            let mut v = serde_json::to_value(&m).unwrap_or(Value::Null);
            let state = app.nodes.get(&m.node_id);
            v["load"] = json!(switchboard_cluster::load_score(m.rooms.unwrap_or(0), m.connections.unwrap_or(0)));
            v["leaseLive"] = json!(state.as_ref().map(|s| s.live));
            v["leaseTerm"] = json!(state.as_ref().map(|s| s.term));
            v["cordoned"] = json!(state.as_ref().is_some_and(|s| s.cordoned));
            v["takesRooms"] = json!(takers.contains(&m.node_id));
            v
        })
        .collect();
    Ok(Json(json!({
        "nodeId": me.node_id,
        "clustered": app.cluster.is_some(),
        "members": members,
        "rooms": page,
        "nextRooms": next,
    }))
    .into_response())
}

/// `POST /api/cluster/nodes/{id}/cordon`: the node takes no new rooms (new or orphaned) and
/// keeps those it has, until uncordoned. Any node answers for any node; recorded in the
/// database, so every node's placement follows within a sweep.
async fn cordon(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    set_cordon(app, headers, id, true).await
}

/// `POST /api/cluster/nodes/{id}/uncordon`: the node takes rooms again.
async fn uncordon(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_cordon(app, headers, id, false).await
}

async fn set_cordon(app: Arc<App>, headers: HeaderMap, id: String, cordoned: bool) -> Result<Response, ApiError> {
    authorize_operator(&app, &headers)?;
    if app.cluster.is_none() {
        return Err(ApiError(StatusCode::CONFLICT, "not_clustered", "this node is not in a cluster".into()));
    }
    if !app.store.set_cordoned(&id, cordoned).await.map_err(internal)? {
        return Err(ApiError(StatusCode::NOT_FOUND, "node_not_found", "no node has this id".into()));
    }
    if let Ok(states) = app.store.node_states().await {
        app.nodes.update(states);
    }
    tracing::info!(node_id = %id, cordoned, "node cordon changed");
    Ok(Json(json!({"nodeId": id, "cordoned": cordoned})).into_response())
}

/// `GET /api/cluster/hosted` parameters.
#[derive(serde::Deserialize)]
struct HostedQuery {
    prefix: Option<String>,
}

/// The rooms whose actors run on this node and still hold their lease, each as the room
/// itself answers (asking a room makes it check its lease first: a room that has lost it
/// stops instead of answering). Used to check that no room ever has two owners. `?prefix=`
/// keeps only the rooms whose id starts with it (asking thousands of rooms is not free).
async fn get_hosted(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HostedQuery>,
) -> Result<Response, ApiError> {
    authorize_operator(&app, &headers)?;
    let mut ids = match app.rooms.call(RoomSupervisorMsg::List, Some(Duration::from_secs(5))).await {
        Ok(CallResult::Success(ids)) => ids,
        _ => Vec::new(),
    };
    if let Some(prefix) = q.prefix.as_deref() {
        ids.retain(|id| id.as_str().starts_with(prefix));
    }
    let mut rooms = Vec::with_capacity(ids.len());
    for id in ids {
        let found =
            app.rooms.call(|reply| RoomSupervisorMsg::Lookup { room: id, reply }, Some(Duration::from_secs(2))).await;
        if let Ok(CallResult::Success(Some(room))) = found
            && let Ok(CallResult::Success(info)) = room.call(RoomMsg::Info, Some(Duration::from_secs(2))).await
        {
            rooms.push(json!({"roomId": info.room_id, "lease": info.lease, "participants": info.participants.len()}));
        }
    }
    Ok(Json(json!({"nodeId": app.config.node_id, "rooms": rooms})).into_response())
}
