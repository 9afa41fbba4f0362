//! The appointment and notification API: book, read, list, confirm, start, end and cancel
//! appointments; read notifications and mark them read. A user's token acts for that user
//! (an appointment they do not take part in answers 404); the API key or an admin token acts
//! as the operator.

use super::*;
use crate::appointments::record::Appointment;
use crate::appointments::{self, Booking, Caller, Refusal};

/// The routes under `/appointments` and `/notifications`.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/appointments", post(book).get(list))
        .route("/appointments/{id}", get(read))
        .route("/appointments/{id}/{action}", post(act))
        .route("/notifications", get(notifications))
        .route("/notifications/{id}/read", post(read_notification))
}

fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if is_api_key(app, headers) {
        return Ok(Caller::Operator(None));
    }
    let c = claims(app, headers)?;
    Ok(if c.grants.room_admin { Caller::Operator(Some(c.sub)) } else { Caller::User(c.sub) })
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotFound => ApiError(StatusCode::NOT_FOUND, "not_found", "no such appointment".into()),
            Refusal::Forbidden(m) => ApiError(StatusCode::FORBIDDEN, "forbidden", m),
            Refusal::Conflict(code, m) => ApiError(StatusCode::CONFLICT, code, m),
            Refusal::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, "invalid_request", m),
            Refusal::Unavailable(m) => ApiError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
        }
    }
}

/// An appointment as the API shows it: the record, its start in RFC 3339, and when its join
/// window opens and when it becomes a no-show.
fn view(app: &App, a: &Appointment) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    let cfg = &app.config.appointments;
    v["start"] = json!(appointments::rfc3339(a.start_ms));
    v["joinOpensAt"] = json!(appointments::rfc3339(a.start_ms - cfg.join_window.as_millis() as i64));
    v["noShowAt"] = json!(appointments::rfc3339(a.start_ms + cfg.noshow_after.as_millis() as i64));
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BookRequest {
    host_id: String,
    guest_ids: Vec<String>,
    start: String,
    #[serde(default = "yes")]
    online: bool,
    #[serde(default)]
    description: Option<String>,
}

fn yes() -> bool {
    true
}

async fn book(State(app): State<Arc<App>>, headers: HeaderMap, body: Body<BookRequest>) -> Result<Response, ApiError> {
    let by = caller(&app, &headers)?;
    if matches!(by, Caller::User(_)) && !claims(&app, &headers)?.grants.room_create {
        let message = "booking makes a room: this token may not create rooms (roomCreate)".to_owned();
        return Err(ApiError(StatusCode::FORBIDDEN, "forbidden", message));
    }
    let req = body.0;
    let start_ms = appointments::parse_rfc3339(&req.start)
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "invalid_request", "start must be an RFC 3339 time".into()))?;
    let booking = Booking {
        host_id: req.host_id,
        guest_ids: req.guest_ids,
        start_ms,
        online: req.online,
        description: req.description,
    };
    let a = appointments::book(&app, &by, booking).await?;
    let location = format!("/appointments/{}", a.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view(&app, &a))).into_response())
}

async fn read(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let by = caller(&app, &headers)?;
    let a = appointments::get(&app, &id, &by).await?;
    Ok(Json(view(&app, &a)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    mine: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `?mine`: the caller's appointments (a user sees only theirs whatever they ask); the
/// operator sees all, or one user's with `?user=`. A browser navigating here (HTML wanted, no
/// credentials) gets the appointments page instead.
async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("text/html") && bearer(&headers).is_none() {
        return Ok(super::web::appointments_page().await);
    }
    let by = caller(&app, &headers)?;
    let _ = q.mine;
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let user = match &by {
        Caller::User(u) => Some(u.as_str()),
        Caller::Operator(_) => q.user.as_deref(),
    };
    let list = app.store.appointments(user, limit).await.map_err(internal)?;
    let list: Vec<Value> = list.iter().map(|a| view(&app, a)).collect();
    Ok(Json(json!({"appointments": list})).into_response())
}

async fn act(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let by = caller(&app, &headers)?;
    let a = match action.as_str() {
        "confirm" => appointments::confirm(&app, &id, &by).await?,
        "start" => appointments::start(&app, &id, &by).await?,
        "end" => appointments::end(&app, &id, &by).await?,
        "cancel" => appointments::cancel(&app, &id, &by).await?,
        _ => {
            let message = "the actions are confirm, start, end and cancel".to_owned();
            return Err(ApiError(StatusCode::NOT_FOUND, "not_found", message));
        }
    };
    Ok(Json(view(&app, &a)).into_response())
}

#[derive(Deserialize)]
struct NotificationsQuery {
    #[serde(default)]
    limit: Option<u32>,
}

/// The caller's notifications, unread first (newest first within each), and how many are
/// unread.
async fn notifications(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<NotificationsQuery>,
) -> Result<Response, ApiError> {
    let user = claims(&app, &headers)?.sub;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let list = app.store.notifications(&user, limit).await.map_err(internal)?;
    let unread = app.store.unread_notifications(&user).await.map_err(internal)?;
    Ok(Json(json!({"notifications": list, "unread": unread})).into_response())
}

async fn read_notification(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = claims(&app, &headers)?.sub;
    match app.store.read_notification(&id, &user).await.map_err(internal)? {
        Some(n) => Ok(Json(n).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, "not_found", "no such notification".into())),
    }
}
