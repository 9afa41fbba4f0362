//! ICE servers for clients: STUN URLs, and TURN URLs with time-limited credentials in the
//! coturn shared-secret scheme (`use-auth-secret`): username `"<expiry>:<userId>"`,
//! password `base64(HMAC-SHA1(secret, username))`.

use crate::config::IceConfig;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// The `iceServers` array for `user`, valid from `now` (unix seconds).
pub fn ice_servers(cfg: &IceConfig, user: &str, now: i64) -> Value {
    let mut servers = Vec::new();
    if !cfg.stun_urls.is_empty() {
        servers.push(json!({ "urls": cfg.stun_urls }));
    }
    if let (false, Some(secret)) = (cfg.turn_urls.is_empty(), &cfg.turn_secret) {
        let expiry = now + cfg.turn_ttl.as_secs() as i64;
        let username = format!("{expiry}:{user}");
        servers.push(json!({
            "urls": cfg.turn_urls,
            "username": username,
            "credential": turn_password(secret, &username),
            "credentialType": "password",
        }));
    }
    Value::Array(servers)
}

/// coturn's REST-API password for `username`.
pub fn turn_password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_password_matches_coturn_scheme() {
        // Reference value computed independently with:
        //   printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64
        assert_eq!(turn_password("north", "1700000000:alice"), "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn servers_carry_expiring_credentials() {
        let cfg = IceConfig {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_secret: Some("north".into()),
            turn_ttl: std::time::Duration::from_secs(600),
        };
        let v = ice_servers(&cfg, "alice", 1_000);
        assert_eq!(v[0]["urls"][0], "stun:127.0.0.1:3478");
        assert_eq!(v[1]["username"], "1600:alice");
        assert_eq!(v[1]["credential"], turn_password("north", "1600:alice"));
    }
}
