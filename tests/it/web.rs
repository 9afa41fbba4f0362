//! The node's web side over HTTP: pages and the SDK served with their types and policy, what
//! `/api/node` tells, and the console's API (its access rules, the room → node map, the live
//! stream). The pages themselves run in a real browser: tests/browser.

use crate::support::TestServer;
use serde_json::{Value, json};

const KEY: &str = "console-test-api-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_the_sdk_are_served_with_their_types_and_policy() {
    let mut s = TestServer::start().await;
    for (path, kind, needle) in [
        ("/", "text/html", "This is a Switchboard node"),
        ("/call", "text/html", "/assets/call.js"),
        ("/lobby", "text/html", "action=\"/call\""),
        ("/console", "text/html", "/assets/console.js"),
        ("/sdk/switchboard.js", "text/javascript", "export class Switchboard"),
        ("/sdk/switchboard.d.ts", "application/typescript", "export interface ConnectOptions"),
        ("/assets/call.js", "text/javascript", "from \"/sdk/switchboard.js\""),
        ("/assets/style.css", "text/css", ".tile"),
    ] {
        let r = s.http.get(s.url(path)).send().await.expect("get");
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().expect("ascii").to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let is_page = kind == "text/html";
        let policy = r.headers().get("content-security-policy").map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(policy.as_ref().is_some_and(|p| p.contains("default-src 'self'")), is_page, "{path}");
        assert!(r.text().await.expect("body").contains(needle), "{path}");
    }
    assert_eq!(s.http.get(s.url("/assets/nothing.js")).send().await.expect("get").status(), 404);
    let node: Value = crate::support::get_json(&s.url("/api/node")).await;
    assert_eq!(node["devMode"], true);
    assert_eq!(node["clustered"], false);
    assert!(node["nodeId"].as_str().is_some_and(|n| !n.is_empty()));
    s.stop().await;
}

async fn mint(s: &TestServer, body: Value) -> String {
    let r = s.http.post(s.url("/auth/token")).bearer_auth(KEY).json(&body).send().await.expect("post");
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_needs_an_admin_and_maps_rooms_to_nodes() {
    let mut s = TestServer::start_with(|c| {
        c.auth.api_key = Some(KEY.into());
        c.auth.dev_mode = Some(false);
    })
    .await;
    let url = s.url("/api/console/overview");
    let r = s.http.get(&url).send().await.expect("get");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "token_missing");
    let person = mint(&s, json!({"userId": "alice"})).await;
    let r = s.http.get(&url).bearer_auth(&person).send().await.expect("get");
    assert_eq!(r.status(), 403);

    let mut alice = crate::support::Client::connect(s.addr, &person).await;
    alice.send(json!({"type": "join", "roomId": "console-api-room"})).await;
    alice.recv_type("joined").await;
    alice.send(json!({"type": "chat", "text": "counted", "id": 1})).await;
    alice.recv_type("ack").await;

    let admin = mint(&s, json!({"userId": "ops", "grants": {"admin": true}})).await;
    let o: Value = crate::support::get_json_as(&url, &admin).await;
    let node = o["node"]["nodeId"].as_str().expect("node id").to_owned();
    assert_eq!(o["members"][0]["nodeId"], node.as_str());
    assert_eq!(o["members"][0]["state"], "up");
    assert_eq!(o["rooms"], json!([{"roomId": "console-api-room", "nodeId": node}]));
    assert_eq!(o["roomsPerNode"][&node], 1);
    assert_eq!(o["here"]["participants"], 1);
    assert!(o["totals"]["messagesByType"]["chat"].as_f64().is_some_and(|n| n >= 1.0), "{o}");
    assert!(o["latency"]["joinP99Ms"].as_f64().is_some_and(|ms| ms > 0.0), "{o}");
    assert_eq!(o["snapshots"], json!({"queued": 0, "dispatched": 0, "scored": 0}));
    assert!(o["events"].as_array().expect("events").iter().any(|e| e["kind"] == "participant.joined"));
    // The API key is an operator too.
    assert_eq!(s.http.get(&url).bearer_auth(KEY).send().await.expect("get").status(), 200);

    // The stream: a browser's EventSource sends the token in the query; a person's is refused.
    let stream = s.url("/api/console/stream");
    let r = s.http.get(&stream).query(&[("token", &person)]).send().await.expect("get");
    assert_eq!(r.status(), 403);
    let r = s.http.get(&stream).query(&[("token", &admin)]).send().await.expect("get");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    let mut body = r;
    let mut text = String::new();
    // Two overviews, the second sent by the node on its own.
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while text.matches("event: overview").count() < 2 {
            let chunk = body.chunk().await.expect("chunk").expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("two overviews within 20 s");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).expect("data line");
    let first: Value = serde_json::from_str(data).expect("json");
    assert_eq!(first["rooms"][0]["roomId"], "console-api-room");
    s.stop().await;
}

#[test]
fn the_grafana_dashboard_is_valid_and_queries_switchboard_metrics() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../deploy/grafana/switchboard.json")).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("switchboard_")), "{}", p["title"]);
        }
    }
}
