//! The node's own web side: the browser SDK (`/sdk/switchboard.js`, with its type
//! declarations), the pages (`/`, `/call`, `/lobby`, `/appointments`, `/console`) and their scripts and styles, all
//! compiled into the binary from `web/`, so a node serves them with nothing else installed.
//! `GET /api/node` tells a page what this node is (no secrets, no authentication).
//!
//! `SWITCHBOARD_WEB_DIR` makes the node read the same files from that folder at each request
//! instead, so the pages can be changed without a rebuild. Only the names listed here are
//! served, whatever the folder holds.

use super::*;

/// A file of `web/` and where it is served.
struct Asset {
    route: &'static str,
    file: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($route:literal, $file:literal, $type:expr) => {
        Asset { route: $route, file: $file, content_type: $type, body: include_str!(concat!("../../web/", $file)) }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("/", "pages/index.html", HTML),
    asset!("/call", "pages/call.html", HTML),
    asset!("/lobby", "pages/lobby.html", HTML),
    asset!("/assets/appointments.js", "pages/appointments.js", JS),
    asset!("/console", "pages/console.html", HTML),
    asset!("/assets/call.js", "pages/call.js", JS),
    asset!("/assets/console.js", "pages/console.js", JS),
    asset!("/assets/index.js", "pages/index.js", JS),
    asset!("/assets/style.css", "pages/style.css", CSS),
    asset!("/sdk/switchboard.js", "sdk/switchboard.js", JS),
    asset!("/sdk/switchboard.d.ts", "sdk/switchboard.d.ts", "application/typescript; charset=utf-8"),
];

/// The appointments page: served at `GET /appointments` to a browser's navigation (the same
/// path lists appointments to API callers; see `http/appointments.rs`).
const APPOINTMENTS_PAGE: Asset = asset!("/appointments", "pages/appointments.html", HTML);

/// The appointments page's response.
pub(super) async fn appointments_page() -> Response {
    serve(&APPOINTMENTS_PAGE).await
}

/// Pages load only what the node serves; media from the camera and from peers come as
/// `MediaStream`s (`blob:`/`mediastream:`), reports' images as `blob:` URLs.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The routes.
pub fn routes() -> Router<Arc<App>> {
    let mut router = Router::new().route("/api/node", get(node_info));
    for asset in ASSETS {
        router = router.route(asset.route, get(move || serve(asset)));
    }
    router
}

async fn serve(asset: &'static Asset) -> Response {
    let body = match std::env::var_os("SWITCHBOARD_WEB_DIR") {
        Some(dir) => match tokio::fs::read_to_string(std::path::Path::new(&dir).join(asset.file)).await {
            Ok(text) => text,
            Err(e) => return internal(format!("{}: {e}", asset.file)).into_response(),
        },
        None => asset.body.to_owned(),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // Small files that change with the node's version: always revalidated.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response();
    if asset.content_type == HTML {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(PAGE_POLICY));
    }
    response
}

/// What this node is: its id, version, whether it is in a cluster and in dev mode (where a
/// page may mint its own tokens), for the pages to show and decide with.
async fn node_info(State(app): State<Arc<App>>) -> Response {
    let me = (app.hello)();
    Json(json!({
        "nodeId": me.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "devMode": app.dev_mode,
        "clustered": app.cluster.is_some(),
        "rooms": me.rooms,
        "connections": me.connections,
    }))
    .into_response()
}
