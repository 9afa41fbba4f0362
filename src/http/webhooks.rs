//! The webhook admin API: register, list, read and remove endpoints, and see their delivery
//! attempts. The API key or an admin token, always (the answers hold signing secrets and
//! delivery history).

use super::*;
use crate::webhooks::{check_endpoint, signing};
use axum::routing::delete;

/// The routes under `/api/webhooks`.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/webhooks", post(create).get(list))
        .route("/api/webhooks/{id}", get(read).merge(delete(remove)))
        .route("/api/webhooks/{id}/deliveries", get(deliveries))
}

fn authorize_admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if is_api_key(app, headers) {
        return Ok(());
    }
    if claims(app, headers)?.grants.room_admin {
        return Ok(());
    }
    Err(ApiError(StatusCode::FORBIDDEN, "forbidden", "webhooks need the API key or an admin token".into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateEndpoint {
    url: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
}

async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body<CreateEndpoint>,
) -> Result<Response, ApiError> {
    authorize_admin(&app, &headers)?;
    let req = body.0;
    check_endpoint(&req.url, req.events.as_deref())
        .map_err(|m| ApiError(StatusCode::BAD_REQUEST, "invalid_request", m))?;
    let secret = match req.secret {
        Some(s) => {
            signing::key_of(&s).map_err(|m| ApiError(StatusCode::BAD_REQUEST, "invalid_secret", m))?;
            s
        }
        None => signing::generate_secret(),
    };
    let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
    app.store.put_webhook_endpoint(&id, &req.url, &secret, req.events.as_deref(), "api").await.map_err(internal)?;
    tracing::info!(endpoint = %id, url = %req.url, "webhook endpoint registered");
    let body = json!({"id": id, "secret": secret, "url": req.url, "events": req.events});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize_admin(&app, &headers)?;
    let endpoints = app.store.webhook_endpoints().await.map_err(internal)?;
    Ok(Json(json!({"endpoints": endpoints})).into_response())
}

fn not_found(id: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "not_found", format!("no webhook endpoint {id}"))
}

async fn read(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    authorize_admin(&app, &headers)?;
    let endpoint = app.store.webhook_endpoint(&id).await.map_err(internal)?.ok_or_else(|| not_found(&id))?;
    Ok(Json(endpoint).into_response())
}

async fn remove(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    authorize_admin(&app, &headers)?;
    if !app.store.delete_webhook_endpoint(&id).await.map_err(internal)? {
        return Err(not_found(&id));
    }
    tracing::info!(endpoint = %id, "webhook endpoint removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    #[serde(default)]
    limit: Option<u32>,
}

async fn deliveries(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    authorize_admin(&app, &headers)?;
    app.store.webhook_endpoint(&id).await.map_err(internal)?.ok_or_else(|| not_found(&id))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let deliveries = app.store.webhook_deliveries(&id, limit).await.map_err(internal)?;
    Ok(Json(json!({"deliveries": deliveries})).into_response())
}
