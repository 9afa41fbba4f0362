//! TLS and origins: `dev-cert` makes a certificate that rustls clients trust for localhost and
//! the loopback addresses; a node given it serves HTTPS and WSS on one port (REST, joins and
//! relays), never plain HTTP there, and takes a new certificate on SIGHUP; a public address
//! without TLS is refused; CORS answers only allowed origins, and the signaling WebSocket
//! refuses pages of other origins.

use crate::support::{Client, Node, SECRET, TestServer, WAIT};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use switchboard::auth::MintRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Runs `switchboard` with `args`: whether it succeeded, and what it printed.
fn switchboard(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(args)
        .env_remove("SWITCHBOARD_HTTP_ADDR")
        .env_remove("SWITCHBOARD_TLS_CERT")
        .env_remove("SWITCHBOARD_TLS_KEY")
        .env_remove("SWITCHBOARD_BEHIND_TLS_PROXY");
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run switchboard");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// `switchboard dev-cert --out dir` (with `--force` when asked): the two files it wrote.
fn dev_cert(dir: &Path, force: bool) -> (PathBuf, PathBuf) {
    let out = dir.to_str().expect("path");
    let args: &[&str] = if force { &["dev-cert", "--out", out, "--force"] } else { &["dev-cert", "--out", out] };
    let (ok, printed) = switchboard(args, &[]);
    assert!(ok, "{printed}");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    assert!(printed.contains(cert.to_str().expect("path")) && printed.contains("--tls-key"), "{printed}");
    (cert, key)
}

fn cert_der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("a PEM certificate")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts exactly these certificates.
fn trusting(certs: &[&Path]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert_der(cert)).expect("a usable root");
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr`, checking the certificate for `name`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    name: &str,
    config: &Arc<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.expect("handshake in time").expect("handshake")
}

/// The certificate the server presented on `tls`.
fn presented(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, session) = tls.get_ref();
    session.peer_certificates().and_then(|c| c.first()).expect("a server certificate").to_vec()
}

/// An HTTP/1.1 request over `stream`: the status code and the body.
async fn http_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write request");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("answer in time").expect("read");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, body.to_owned())
}

/// A signaling client over WSS, checking the certificate for `name`.
async fn wss_client(
    addr: std::net::SocketAddr,
    name: &str,
    config: &Arc<rustls::ClientConfig>,
    token: &str,
) -> Client<TlsStream<TcpStream>> {
    let tls = tls_connect(addr, name, config).await;
    let url = format!("wss://{name}:{}/ws/signal?token={token}", addr.port());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    Client::over(ws)
}

fn token(s: &TestServer, user: &str) -> String {
    let req = MintRequest { user_id: user.into(), room_id: None, name: None, ttl: None, grants: None };
    s.app().authority.mint(req).expect("mint").0
}

async fn wss_joined(
    s: &TestServer,
    config: &Arc<rustls::ClientConfig>,
    user: &str,
    room: &str,
) -> Client<TlsStream<TcpStream>> {
    let mut c = wss_client(s.addr, "localhost", config, &token(s, user)).await;
    c.send(json!({"type": "join", "roomId": room})).await;
    let joined = c.recv_type("joined").await;
    c.peer_id = joined["peerId"].as_str().expect("peerId").to_owned();
    c
}

/// A node serving TLS with a fresh dev certificate: the node, the certificate's folder, and
/// a client configuration that trusts the certificate.
async fn tls_server() -> (TestServer, tempfile::TempDir, Arc<rustls::ClientConfig>) {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = dev_cert(certs.path(), false);
    let config = trusting(&[&cert]);
    let s = TestServer::start_with(|c| {
        c.http.tls_cert = Some(cert.clone());
        c.http.tls_key = Some(key.clone());
    })
    .await;
    (s, certs, config)
}

#[test]
fn dev_cert_is_trusted_for_localhost_and_the_loopback_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = dev_cert(dir.path(), false);
    assert!(std::fs::read_to_string(&key).expect("key").contains("PRIVATE KEY"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der(&cert)).expect("a usable root");
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .expect("verifier");
    let check = |name: &str| {
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &cert_der(&cert),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
    };
    for name in ["localhost", "127.0.0.1", "::1"] {
        check(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(check("example.com").is_err(), "valid for local names only");

    let before = std::fs::read(&cert).expect("cert");
    let (ok, printed) = switchboard(&["dev-cert", "--out", dir.path().to_str().expect("path")], &[]);
    assert!(!ok && printed.contains("--force"), "never overwrites unasked: {printed}");
    assert_eq!(std::fs::read(&cert).expect("cert"), before);
    dev_cert(dir.path(), true);
    assert_ne!(std::fs::read(&cert).expect("cert"), before, "--force makes a new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_on_the_same_port() {
    let (mut s, _certs, config) = tls_server().await;
    for name in ["localhost", "127.0.0.1"] {
        let (status, body) = http_over(tls_connect(s.addr, name, &config).await, name, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"), "over {name}");
    }

    let mut alice = wss_joined(&s, &config, "alice", "tls-room").await;
    let mut bob = wss_joined(&s, &config, "bob", "tls-room").await;
    assert_eq!(alice.recv_type("peer_joined").await["peerId"], bob.peer_id.as_str());
    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "v=0 offer over wss"})).await;
    let offer = bob.recv_type("offer").await;
    assert_eq!(
        (offer["peerId"].as_str(), offer["sdp"].as_str()),
        (Some(alice.peer_id.as_str()), Some("v=0 offer over wss"))
    );
    bob.send(json!({"type": "answer", "peerId": alice.peer_id, "sdp": "v=0 answer"})).await;
    assert_eq!(alice.recv_type("answer").await["peerId"], bob.peer_id.as_str());

    // The graceful shutdown works over TLS as over plain TCP: clients are told why.
    s.stop().await;
    let close = alice.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_crate_speaks_wss_with_its_callers_roots() {
    use switchboard_client::{Client as CrateClient, ClientConfig, Code, Event, JoinOptions};
    let (mut s, _certs, config) = tls_server().await;
    let url = format!("wss://127.0.0.1:{}/ws/signal", s.addr.port());
    let crate_config = |user: &str| {
        let mut c = ClientConfig::new(url.clone(), token(&s, user));
        c.tls = Some(config.clone());
        c
    };
    let (alice, _) =
        CrateClient::connect_to_room(crate_config("alice"), "tls-crate", JoinOptions::default()).await.expect("alice");
    let (mut bob, bob_joined) =
        CrateClient::connect_to_room(crate_config("bob"), "tls-crate", JoinOptions::default()).await.expect("bob");
    let alice_id = bob_joined.peers.first().cloned().expect("alice is in the room");
    let id = bob.send_relay(&alice_id, "offer", json!({"sdp": "v=0 over wss"})).expect("send");
    let acked = tokio::time::timeout(WAIT, async {
        while let Some(e) = bob.next_event().await {
            if matches!(e, Event::Acked(a) if a == id) {
                return true;
            }
        }
        false
    })
    .await
    .expect("ack in time");
    assert!(acked, "the offer was acknowledged over wss");
    // Without the caller's roots the node's self-signed certificate is refused.
    let mut untrusted = ClientConfig::new(url.clone(), token(&s, "carol"));
    untrusted.tls = Some(trusting(&[]));
    let err = CrateClient::connect(untrusted).await.expect_err("an untrusted certificate");
    assert_eq!(err.code(), None::<&Code>, "a TLS failure, not a server refusal: {err}");
    alice.close().await;
    bob.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_is_not_served() {
    let (mut s, _certs, config) = tls_server().await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    // The server ends the connection (after a TLS alert at most); a read error is an end too.
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await.expect("the server ends it in time");
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP answered: {:?}", String::from_utf8_lossy(&answer));
    assert!(!String::from_utf8_lossy(&answer).contains("ok"), "{answer:?}");
    // It goes on serving TLS.
    let (status, _) = http_over(tls_connect(s.addr, "localhost", &config).await, "localhost", "/healthz").await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_the_old_one_on_a_bad_file() {
    let data = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = dev_cert(certs.path(), false);
    let first = cert_der(&cert).to_vec();
    let node = Node::spawn(
        data.path(),
        &["--tls-cert", cert.to_str().expect("path"), "--tls-key", key.to_str().expect("path")],
    );
    // The startup line names the WSS address (it reaches the log just after the address is
    // read from it).
    node.await_log("signaling at wss://", 0).await;
    let before = trusting(&[&cert]);
    let kept = tls_connect(node.addr, "localhost", &before).await;
    assert_eq!(presented(&kept), first);

    let second_dir = tempfile::tempdir().expect("tempdir");
    let (second_cert, second_key) = dev_cert(second_dir.path(), false);
    let second = cert_der(&second_cert).to_vec();
    assert_ne!(first, second);
    std::fs::copy(&second_cert, &cert).expect("swap the certificate");
    std::fs::copy(&second_key, &key).expect("swap the key");
    node.signal("HUP");
    node.await_log("tls certificate reloaded", 0).await;
    let after = trusting(&[&second_cert]);
    assert_eq!(
        presented(&tls_connect(node.addr, "localhost", &after).await),
        second,
        "new connections get the new one"
    );
    // A connection made before the reload is still served.
    let (status, _) = http_over(kept, "localhost", "/healthz").await;
    assert_eq!(status, 200);

    std::fs::write(&key, "not a key").expect("break the key");
    node.signal("HUP");
    node.await_log("tls certificate not reloaded", 0).await;
    assert!(node.log().contains("http.tls_key"), "the log names the bad file's key:\n{}", node.log());
    let tls = tls_connect(node.addr, "localhost", &after).await;
    assert_eq!(presented(&tls), second, "the last good certificate goes on");
    let (status, _) = http_over(tls, "localhost", "/healthz").await;
    assert_eq!(status, 200);
}

#[test]
fn a_public_address_without_tls_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("path");
    let credentials = [("SWITCHBOARD_API_KEY", "an-api-key-of-enough-length"), ("SWITCHBOARD_AUTH_SECRET", SECRET)];
    let (ok, out) = switchboard(&["serve", "--http-addr", "0.0.0.0:0", "--data-dir", d], &credentials);
    assert!(!ok, "must not start: {out}");
    assert!(out.contains("plain HTTP") && out.contains("--tls-cert") && out.contains("--behind-tls-proxy"), "{out}");

    let (ok, out) = switchboard(&["serve", "--http-addr", "127.0.0.1:0", "--data-dir", d, "--tls-cert", "x.pem"], &[]);
    assert!(!ok && out.contains("http.tls_key"), "{out}");

    // Told that a proxy does TLS, by flag or by environment, the configuration is accepted
    // (`migrate` checks it as `serve` does, without listening anywhere).
    let (ok, out) =
        switchboard(&["migrate", "--http-addr", "0.0.0.0:0", "--data-dir", d, "--behind-tls-proxy"], &credentials);
    assert!(ok, "{out}");
    let proxied = [credentials[0], credentials[1], ("SWITCHBOARD_BEHIND_TLS_PROXY", "true")];
    let (ok, out) = switchboard(&["migrate", "--http-addr", "0.0.0.0:0", "--data-dir", d], &proxied);
    assert!(ok, "{out}");
}

#[test]
fn an_unusable_certificate_stops_the_node_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "this is no certificate").expect("write");
    let (b, d) = (bad.to_str().expect("path"), dir.path().to_str().expect("path"));
    let (ok, out) =
        switchboard(&["serve", "--http-addr", "127.0.0.1:0", "--data-dir", d, "--tls-cert", b, "--tls-key", b], &[]);
    assert!(!ok, "must not start: {out}");
    assert!(out.contains("http.tls_cert") && out.contains("no PEM certificate"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    let missing = dir.path().join("missing.pem");
    let m = missing.to_str().expect("path");
    let (ok, out) =
        switchboard(&["serve", "--http-addr", "127.0.0.1:0", "--data-dir", d, "--tls-cert", m, "--tls-key", m], &[]);
    assert!(!ok && out.contains("cannot read"), "{out}");
}

/// The `access-control-*` headers of an answer.
fn cors_headers(resp: &reqwest::Response) -> Vec<(String, String)> {
    resp.headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("access-control-"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ")
}

async fn preflight(s: &TestServer, origin: &str) -> reqwest::Response {
    s.http
        .request(reqwest::Method::OPTIONS, s.url("/auth/token"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("preflight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_only() {
    let mut s = TestServer::start_with(|c| c.http.allowed_origins = vec!["https://app.example.com".into()]).await;
    for origin in ["https://app.example.com", "http://localhost:5173", "http://127.0.0.1:3000"] {
        let resp = preflight(&s, origin).await;
        assert_eq!(resp.status(), 204, "{origin}");
        assert_eq!(header(&resp, "access-control-allow-origin"), origin);
        let methods = header(&resp, "access-control-allow-methods");
        assert!(["GET", "POST", "DELETE"].iter().all(|m| methods.contains(m)), "{methods}");
        let headers = header(&resp, "access-control-allow-headers").to_lowercase();
        assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");
        assert!(header(&resp, "vary").to_lowercase().contains("origin"));

        let resp = s.http.get(s.url("/healthz")).header("origin", origin).send().await.expect("get");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "access-control-allow-origin"), origin);
        assert!(header(&resp, "vary").to_lowercase().contains("origin"));
    }
    for origin in ["https://evil.example.com", "https://app.example.com.evil.com", "null"] {
        let resp = preflight(&s, origin).await;
        assert!(cors_headers(&resp).is_empty(), "{origin}: {:?}", cors_headers(&resp));
        let resp = s.http.get(s.url("/healthz")).header("origin", origin).send().await.expect("get");
        assert_eq!(resp.status(), 200, "served, but not readable by the page");
        assert!(cors_headers(&resp).is_empty(), "{origin}: {:?}", cors_headers(&resp));
    }
    s.stop().await;

    // Outside dev mode, loopback pages are other origins like any.
    let mut s = TestServer::start_with(|c| c.auth.api_key = Some("an-api-key-of-enough-length".into())).await;
    assert!(!s.app().dev_mode);
    assert!(cors_headers(&preflight(&s, "http://localhost:5173").await).is_empty());
    s.stop().await;
}

/// Opens the signaling WebSocket with these extra headers: the upgrade's result, and on a
/// refusal its status and JSON body.
async fn open_socket(s: &TestServer, token: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, Value)> {
    let mut req = format!("ws://{}/ws/signal?token={token}", s.addr).into_client_request().expect("request");
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name");
        req.headers_mut().insert(name, v.parse().expect("header"));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await.expect("in time") {
        Ok((ws, _)) => Ok(Client::over(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err((resp.status().as_u16(), serde_json::from_slice(&body).expect("a JSON error")))
        }
        Err(e) => panic!("unexpected: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_refuses_pages_of_other_origins() {
    let mut s = TestServer::start_with(|c| {
        c.http.allowed_origins = vec!["https://app.example.com".into()];
        c.auth.api_key = Some("an-api-key-of-enough-length".into());
    })
    .await;
    let token = token(&s, "alice");
    let (status, body) =
        open_socket(&s, &token, &[("origin", "https://evil.example.com")]).await.err().expect("refused");
    assert_eq!(status, 403);
    assert_eq!((body["type"].as_str(), body["code"].as_str()), (Some("error"), Some("origin_forbidden")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    // Outside dev mode a loopback page is another origin, unless it is the node's own.
    assert!(open_socket(&s, &token, &[("origin", "http://localhost:5173")]).await.is_err());

    let own = format!("http://{}", s.addr);
    let accepted = [vec![], vec![("origin", "https://app.example.com")], vec![("origin", own.as_str())]];
    for (i, headers) in accepted.iter().enumerate() {
        let token = crate::tls::token(&s, &format!("user{i}"));
        let mut c = open_socket(&s, &token, headers).await.unwrap_or_else(|e| panic!("{headers:?}: {e:?}"));
        c.send(json!({"type": "join", "roomId": "origin-room"})).await;
        assert_eq!(c.recv_type("joined").await["roomId"], "origin-room", "{headers:?}");
    }
    s.stop().await;
}
