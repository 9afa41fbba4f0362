//! Which web origins may use the node from a browser: the CORS answers of the REST API and
//! the origin check of the signaling WebSocket (which browsers open from any page, without
//! CORS, so the node checks the `Origin` itself).
//!
//! The allowed origins are `http.allowed_origins`, compared exactly as browsers send them, and
//! in dev mode also every loopback origin (a page served by `localhost` during development).
//! A request from any other origin is served as if CORS did not exist: no CORS headers, so the
//! browser keeps the answer from the page. (A small layer of its own rather than tower-http's
//! `CorsLayer`, which answers every `OPTIONS` request itself and sends its allowed methods and
//! headers to refused origins too.)

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashSet;
use std::sync::Arc;
use url::{Host, Url};

/// Methods the API answers from another origin.
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, DELETE");
/// Request headers a page may send: its token and its JSON bodies.
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("authorization, content-type");
/// How long a browser may keep a preflight answer, seconds.
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// The origins allowed to call this node from a browser.
#[derive(Clone, Debug)]
pub struct Origins {
    exact: Arc<HashSet<String>>,
    loopback: bool,
}

impl Origins {
    /// The configured origins, plus loopback ones in dev mode.
    pub fn new(allowed: &[String], dev_mode: bool) -> Origins {
        Origins { exact: Arc::new(allowed.iter().cloned().collect()), loopback: dev_mode }
    }

    /// Whether a page of `origin` (an `Origin` header's value) may call the node.
    pub fn allows(&self, origin: &str) -> bool {
        self.exact.contains(origin) || (self.loopback && is_loopback_origin(origin))
    }

    /// Whether a request with these headers may open the signaling WebSocket: one without an
    /// `Origin` (not from a browser page: native apps, servers), one from the node's own pages
    /// (the origin names the host the request was sent to), or one from an allowed origin.
    pub fn may_open_socket(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        let Ok(origin) = origin.to_str() else { return false };
        if self.allows(origin) {
            return true;
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        host.is_some_and(|host| same_host(origin, host))
    }
}

/// Checks a configured origin: `http` or `https`, a host, an optional port, nothing else,
/// written the way browsers write it (lowercase, no default port, no trailing slash), since
/// origins are compared as strings.
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Err("a wildcard is not supported: list each origin".into());
    }
    let url = Url::parse(origin).map_err(|e| format!("{origin:?} is not an origin (scheme://host[:port]): {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{origin:?}: an origin is http:// or https://"));
    }
    let normal = url.origin().ascii_serialization();
    if normal != origin {
        return Err(format!("{origin:?}: write it as browsers send it, {normal:?}"));
    }
    Ok(())
}

/// `http(s)://localhost`, `127.x.x.x` or `[::1]`, with any port, in normal form.
fn is_loopback_origin(origin: &str) -> bool {
    let Ok(url) = Url::parse(origin) else { return false };
    if !matches!(url.scheme(), "http" | "https") || url.origin().ascii_serialization() != origin {
        return false;
    }
    match url.host() {
        Some(Host::Domain(name)) => name == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether `origin` names the same host and port as a `Host` header (the port defaults
/// according to the origin's scheme on both sides).
fn same_host(origin: &str, host: &str) -> bool {
    let Ok(origin) = Url::parse(origin) else { return false };
    if !matches!(origin.scheme(), "http" | "https") {
        return false;
    }
    let Ok(target) = Url::parse(&format!("{}://{host}", origin.scheme())) else { return false };
    // A Host header is only an authority; anything that parses into more is not one.
    if target.path() != "/" || target.query().is_some() || !target.username().is_empty() {
        return false;
    }
    origin.host() == target.host() && origin.port_or_known_default() == target.port_or_known_default()
}

/// The CORS middleware: answers the preflight of an allowed origin itself, and marks the
/// answers to its other requests as readable by it.
pub async fn layer(State(origins): State<Origins>, req: Request, next: Next) -> Response {
    let allowed = req.headers().get(header::ORIGIN).filter(|o| o.to_str().is_ok_and(|o| origins.allows(o))).cloned();
    let Some(origin) = allowed else {
        let mut resp = next.run(req).await;
        vary_on_origin(&mut resp);
        return resp;
    };
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        resp
    } else {
        next.run(req).await
    };
    resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    vary_on_origin(&mut resp);
    resp
}

/// Every answer depends on the `Origin` (CORS headers or none): a shared cache must not hand
/// one origin's answer to another.
fn vary_on_origin(resp: &mut Response) {
    resp.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_origins_are_checked() {
        for good in ["https://app.example.com", "http://localhost:3000", "https://[::1]:8443", "https://10.0.0.1"] {
            check_origin(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, says) in [
            ("*", "wildcard"),
            ("app.example.com", "not an origin"),
            ("ftp://app.example.com", "http:// or https://"),
            ("https://app.example.com/", "\"https://app.example.com\""),
            ("https://app.example.com/path", "\"https://app.example.com\""),
            ("https://App.Example.com", "\"https://app.example.com\""),
            ("https://app.example.com:443", "\"https://app.example.com\""),
            ("https://user@app.example.com", "\"https://app.example.com\""),
        ] {
            let err = check_origin(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn loopback_origins_only_in_dev_mode() {
        let dev = Origins::new(&["https://app.example.com".into()], true);
        let prod = Origins::new(&["https://app.example.com".into()], false);
        for o in [
            "http://localhost",
            "https://localhost:5173",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:3000",
        ] {
            assert!(dev.allows(o), "{o}");
            assert!(!prod.allows(o), "{o}");
        }
        assert!(dev.allows("https://app.example.com") && prod.allows("https://app.example.com"));
        for o in ["https://evil.example.com", "http://localhost.evil.com", "null", "http://localhost/x", "file://"] {
            assert!(!dev.allows(o), "{o}");
        }
    }

    #[test]
    fn sockets_from_the_nodes_own_pages_or_allowed_origins() {
        let origins = Origins::new(&["https://app.example.com".into()], false);
        let headers = |origin: Option<&str>, host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).expect("host"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).expect("origin"));
            }
            h
        };
        assert!(origins.may_open_socket(&headers(None, "sb.example.com")), "no Origin: not a browser page");
        assert!(origins.may_open_socket(&headers(Some("https://sb.example.com"), "sb.example.com")));
        assert!(origins.may_open_socket(&headers(Some("https://sb.example.com"), "sb.example.com:443")));
        assert!(origins.may_open_socket(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")));
        assert!(origins.may_open_socket(&headers(Some("https://app.example.com"), "sb.example.com")));
        assert!(!origins.may_open_socket(&headers(Some("https://evil.example.com"), "sb.example.com")));
        assert!(!origins.may_open_socket(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")));
        assert!(!origins.may_open_socket(&headers(Some("null"), "sb.example.com")));
        assert!(!origins.may_open_socket(&headers(Some("https://sb.example.com"), "sb.example.com/x")));
    }
}
