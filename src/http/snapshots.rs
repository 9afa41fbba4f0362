//! Snapshots, reports and evidence over HTTP: a participant posts a snapshot (multipart
//! `image` + `subject`, or JSON with a base64 `image`), follows its job, reads the signed
//! report and the room's chain, and fetches the artifacts by content id; anyone reads the
//! nodes' public keys.

use super::*;
use crate::cv::gray::{Gray, ImageLimits};
use crate::store::NewJob;
use axum::extract::{DefaultBodyLimit, Multipart};
use base64::Engine;

/// Largest request body: a 10 MiB image, base64-encoded, with room to spare.
const BODY_LIMIT: usize = 15 * 1024 * 1024;

/// The routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/rooms/{id}/snapshots", post(create).layer(DefaultBodyLimit::max(BODY_LIMIT)))
        .route("/rooms/{id}/reports", get(room_reports))
        .route("/snapshots/{id}", get(read_job))
        .route("/reports/{id}", get(read_report))
        .route("/evidence/{cid}", get(read_evidence))
        .route("/.well-known/switchboard-keys.json", get(key_set))
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, code, message.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSnapshot {
    image: String,
    subject: String,
}

/// The image and subject of a request, from either form.
async fn read_upload(headers: &HeaderMap, request: axum::extract::Request) -> Result<(Vec<u8>, String), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|e| bad("invalid_request", format!("multipart: {e}")))?;
        let (mut image, mut subject) = (None, None);
        while let Some(field) =
            form.next_field().await.map_err(|e| bad("invalid_request", format!("multipart: {e}")))?
        {
            match field.name() {
                Some("image") => {
                    image = Some(field.bytes().await.map_err(|e| bad("invalid_request", e.to_string()))?.to_vec())
                }
                Some("subject") => {
                    subject = Some(field.text().await.map_err(|e| bad("invalid_request", e.to_string()))?)
                }
                _ => {}
            }
        }
        let image = image.ok_or_else(|| bad("invalid_request", "the form has no image field"))?;
        return Ok((image, subject.ok_or_else(|| bad("invalid_request", "the form has no subject field"))?));
    }
    let Body(body) = Body::<JsonSnapshot>::from_request(request, &()).await?;
    let image = base64::engine::general_purpose::STANDARD
        .decode(body.image.trim())
        .map_err(|_| bad("invalid_request", "image must be base64"))?;
    Ok((image, body.subject))
}

async fn create(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let requested_by = if is_api_key(&app, &headers) {
        "api".to_owned()
    } else {
        let c = claims(&app, &headers)?;
        if !c.grants.can_snapshot {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "snapshot_not_granted",
                "this token does not grant snapshots".into(),
            ));
        }
        if !c.grants.room_admin && !app.store.is_member(&room, &c.sub).await.map_err(internal)? {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the room's participants may take snapshots".into(),
            ));
        }
        c.sub
    };
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 128) {
        return Err(bad("invalid_request", "Idempotency-Key must be 1-128 characters"));
    }
    let (image, subject) = read_upload(&headers, request).await?;
    if subject.is_empty() || subject.len() > 128 {
        return Err(bad("invalid_request", "subject must be 1-128 characters"));
    }
    // A bad image is refused here, with its code, before any job exists.
    let limits = ImageLimits { max_bytes: app.config.snapshots.max_image_bytes, ..ImageLimits::default() };
    // Decoding is CPU work: off the async workers.
    let (image, checked) = tokio::task::spawn_blocking(move || {
        let checked = Gray::decode(&image, &limits).map(|_| ());
        (image, checked)
    })
    .await
    .map_err(internal)?;
    if let Err(e) = checked {
        let status =
            if e.code() == "image_too_large" { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
        return Err(ApiError(status, e.code(), e.to_string()));
    }
    let snapshot_cid = app.evidence.put(&image).await.map_err(internal)?;
    let new = NewJob {
        room_id: room,
        subject,
        requested_by,
        idempotency_key: key,
        snapshot_cid,
        origin_node: app.config.node_id.clone(),
    };
    let (job, _) = app.store.create_snapshot_job(&new).await.map_err(internal)?;
    app.snapshot_wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(json!({"jobId": job.id, "state": job.state}))).into_response())
}

async fn read_job(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = app
        .store
        .snapshot_job(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no snapshot job {id}")))?;
    authorize_room(&app, &headers, &job.room_id).await?;
    Ok(Json(job).into_response())
}

async fn read_report(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (room, report) = app
        .store
        .report(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no report {id}")))?;
    authorize_room(&app, &headers, &room).await?;
    Ok(Json(report).into_response())
}

async fn room_reports(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    authorize_room(&app, &headers, &room).await?;
    let reports = app.store.room_reports(&room).await.map_err(internal)?;
    Ok(Json(json!({"roomId": room, "reports": reports})).into_response())
}

async fn read_evidence(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError(StatusCode::NOT_FOUND, "not_found", format!("no evidence {cid}"));
    let rooms = app.store.evidence_rooms(&cid).await.map_err(internal)?;
    let mut allowed = Err(missing());
    for room in &rooms {
        allowed = authorize_room(&app, &headers, room).await;
        if allowed.is_ok() {
            break;
        }
    }
    allowed?;
    let bytes = app.evidence.get(&cid).await.map_err(internal)?.ok_or_else(missing)?;
    let kind = match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "private, max-age=31536000, immutable")], bytes)
        .into_response())
}

async fn key_set(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let keys = app.store.signing_keys().await.map_err(internal)?;
    Ok(Json(json!({"keys": keys})).into_response())
}
