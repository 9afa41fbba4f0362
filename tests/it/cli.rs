//! The command line: configuration precedence (defaults < file < environment < flags), offline
//! token minting, and refusing to expose a node without credentials.

use crate::support::SECRET;
use std::process::Command;
use switchboard::auth::Authority;
use switchboard::config::AuthConfig;

fn switchboard(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(args).env_remove("SWITCHBOARD_DATABASE_URL").env_remove("SWITCHBOARD_HTTP_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run switchboard");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    let file = dir.path().join("node.toml");
    std::fs::write(&file, format!("[database]\nurl = \"{}\"\n", db("from-file.db"))).expect("write config");
    let f = file.to_str().expect("path");

    let (ok, out) = switchboard(&["migrate", "--config", f], &[]);
    assert!(ok && out.contains("from-file.db"), "{out}");
    let (ok, out) = switchboard(&["migrate", "--config", f], &[("SWITCHBOARD_DATABASE_URL", &db("from-env.db"))]);
    assert!(ok && out.contains("from-env.db"), "{out}");
    let (ok, out) = switchboard(
        &["migrate", "--config", f, "--database-url", &db("from-flag.db")],
        &[("SWITCHBOARD_DATABASE_URL", &db("from-env.db"))],
    );
    assert!(ok && out.contains("from-flag.db"), "{out}");

    std::fs::write(&file, "[rooms]\nmax_people = 3\n").expect("write config");
    let (ok, out) = switchboard(&["migrate", "--config", f], &[]);
    assert!(!ok && out.contains("max_people"), "an unknown key is named: {out}");
}

#[test]
fn token_command_mints_with_the_node_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("path");
    let (ok, out) = switchboard(
        &["token", "--user", "u1", "--room", "r9", "--ttl", "15m", "--data-dir", d],
        &[("SWITCHBOARD_AUTH_SECRET", SECRET)],
    );
    assert!(ok, "{out}");
    let claims = Authority::new(SECRET.as_bytes(), &AuthConfig::default()).verify(out.trim()).expect("valid token");
    assert_eq!((claims.sub.as_str(), claims.room.as_deref()), ("u1", Some("r9")));
    assert_eq!(claims.exp - claims.iat, 900);
}

#[test]
fn a_public_address_without_credentials_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("path");
    let (ok, out) = switchboard(&["serve", "--http-addr", "0.0.0.0:0", "--data-dir", d], &[]);
    assert!(!ok, "must not start");
    assert!(out.contains("auth.api_key") && out.contains("not a loopback address"), "{out}");
}

/// The benchmark runs end to end against its own node and writes its JSON (a tiny load: this
/// checks that it works, not how fast).
#[test]
fn the_benchmark_runs_and_writes_its_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let j = json.to_str().expect("path");
    let (ok, out) =
        switchboard(&["bench", "relay", "--pairs", "2", "--rate", "200", "--seconds", "1", "--ids", "--json", j], &[]);
    assert!(ok, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("JSON");
    let figures: Vec<(String, f64)> = serde_json::from_value(report["runs"][0]["figures"].clone()).expect("figures");
    let figures: std::collections::HashMap<String, f64> = figures.into_iter().collect();
    assert_eq!(figures["sent"], 200.0);
    assert_eq!(figures["delivered"], 200.0, "{out}");
    assert_eq!(figures["acks"], 200.0, "{out}");
    let (ok, out) = switchboard(&["bench", "idle", "--connections", "20", "--json", j], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("per_connection_kib"), "{out}");
    // Forty arrivals in one lobby: twenty of them find someone waiting.
    let (ok, out) = switchboard(&["bench", "lobby", "--rate", "40", "--seconds", "1", "--json", j], &[]);
    assert!(ok, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("JSON");
    let figures: Vec<(String, f64)> = serde_json::from_value(report["runs"][0]["figures"].clone()).expect("figures");
    let figures: std::collections::HashMap<String, f64> = figures.into_iter().collect();
    assert_eq!((figures["paired"], figures["waited"], figures["failed"]), (20.0, 20.0, 0.0), "{out}");
}
