//! Webhooks from the outbox, per the Standard Webhooks specification: endpoints registered
//! through the admin API or listed in the config file, signed deliveries in event order per
//! endpoint, retries with backoff for a day, dead letters, and `410 Gone` honoured.
//! `docs/events.md` documents the contract.

pub mod dispatcher;
pub mod signing;

use crate::config::WebhookEndpointConfig;
use crate::events::Event;
use crate::store::Store;

/// The id a config-file endpoint gets: stable across restarts, so its deliveries stay its own.
pub fn config_endpoint_id(url: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(url.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("cfg_{hex}")
}

/// Checks an endpoint's URL and kinds; the error says what is wrong.
pub fn check_endpoint(url: &str, events: Option<&[String]>) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("url must be http:// or https:// with a host".into());
    }
    if url.len() > 2048 {
        return Err("url is longer than 2048 characters".into());
    }
    if let Some(unknown) = events.into_iter().flatten().find(|k| !Event::KINDS.contains(&k.as_str())) {
        return Err(format!("events: unknown kind {unknown:?}; known: {}", Event::KINDS.join(", ")));
    }
    Ok(())
}

/// Writes the config file's endpoints into the store (they follow the file at every start).
pub async fn register_configured(store: &Store, endpoints: &[WebhookEndpointConfig]) -> anyhow::Result<()> {
    for e in endpoints {
        let id = config_endpoint_id(&e.url);
        store
            .put_webhook_endpoint(&id, &e.url, &e.secret, e.events.as_deref(), "config")
            .await
            .map_err(|err| anyhow::anyhow!("webhook endpoint {}: {err}", e.url))?;
    }
    Ok(())
}
