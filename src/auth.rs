//! Tokens: HS256 JWTs with `exp`, `nbf`, `iat`, `iss`, `aud`, a subject (the user) and
//! grants. Verification is strict: one algorithm, all time claims required, issuer and
//! audience checked. The signing secret comes from config or is generated into the data
//! dir with mode 0600.

use crate::config::{AuthConfig, IceConfig};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// What a token allows. On the wire (`grants` in a token and in `POST /auth/token`) the names
/// are camelCase: `roomJoin`, `canPublish`, `canSubscribe`, `canPublishData`, `canSnapshot`,
/// `roomAdmin`, `hidden`, `roomCreate`; an unknown name is refused. The names of earlier
/// tokens (`publish`, `control`, `chat`, `snapshot`, `admin`) are still read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", from = "GrantsWire")]
pub struct Grants {
    /// Join rooms (and wait in lobbies) at all.
    pub room_join: bool,
    /// Send media: offers and answers whose SDP sends (`sendrecv`, `sendonly`).
    pub can_publish: bool,
    /// Receive media: offers and answers whose SDP receives (`sendrecv`, `recvonly`).
    pub can_subscribe: bool,
    /// Send data: chat, overlays, control actions, `end_call`, data channels in SDP.
    pub can_publish_data: bool,
    /// Take snapshots of the call (`POST /rooms/{id}/snapshots`).
    pub can_snapshot: bool,
    /// Administer rooms: bypass invitee lists, read any room, create rooms, operate the node's
    /// APIs (console, webhooks, cluster views), act as the operator on appointments.
    pub room_admin: bool,
    /// Be in a room without the others seeing it (no `peer_joined`, not among `participants`).
    pub hidden: bool,
    /// Create a room by joining one that does not exist yet.
    pub room_create: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            can_snapshot: true,
            room_admin: false,
            hidden: false,
            room_create: true,
        }
    }
}

/// Grants as they may be written: today's names, and the earlier ones.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GrantsWire {
    room_join: Option<bool>,
    can_publish: Option<bool>,
    can_subscribe: Option<bool>,
    can_publish_data: Option<bool>,
    can_snapshot: Option<bool>,
    room_admin: Option<bool>,
    hidden: Option<bool>,
    room_create: Option<bool>,
    publish: Option<bool>,
    control: Option<bool>,
    chat: Option<bool>,
    snapshot: Option<bool>,
    admin: Option<bool>,
}

impl From<GrantsWire> for Grants {
    fn from(w: GrantsWire) -> Self {
        let d = Grants::default();
        // An earlier token's data grants were two: it may send data only if both allow it.
        let legacy_data = match (w.control, w.chat) {
            (None, None) => None,
            (c, h) => Some(c.unwrap_or(true) && h.unwrap_or(true)),
        };
        Grants {
            room_join: w.room_join.unwrap_or(d.room_join),
            can_publish: w.can_publish.or(w.publish).unwrap_or(d.can_publish),
            can_subscribe: w.can_subscribe.unwrap_or(d.can_subscribe),
            can_publish_data: w.can_publish_data.or(legacy_data).unwrap_or(d.can_publish_data),
            can_snapshot: w.can_snapshot.or(w.snapshot).unwrap_or(d.can_snapshot),
            room_admin: w.room_admin.or(w.admin).unwrap_or(d.room_admin),
            hidden: w.hidden.unwrap_or(d.hidden),
            room_create: w.room_create.unwrap_or(d.room_create),
        }
    }
}

/// The claims of a Switchboard token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Not before, unix seconds.
    pub nbf: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// The only room this token may join; absent means any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it allows.
    #[serde(default)]
    pub grants: Grants,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Bad signature, algorithm, issuer, audience or shape.
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

impl TokenError {
    /// The code a client sees.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::Invalid(_) => "token_invalid",
        }
    }
}

/// What a mint request asks for.
#[derive(Debug, Default)]
pub struct MintRequest {
    /// The user.
    pub user_id: String,
    /// Restrict to one room.
    pub room_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Lifetime; capped at the configured maximum.
    pub ttl: Option<Duration>,
    /// Grants; defaults when absent.
    pub grants: Option<Grants>,
}

/// Mints and verifies tokens.
pub struct Authority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl Authority {
    /// An authority over `secret`.
    pub fn new(secret: &[u8], cfg: &AuthConfig) -> Authority {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = cfg.leeway.as_secs();
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        Authority {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            default_ttl: cfg.token_ttl,
            max_ttl: cfg.max_token_ttl,
        }
    }

    /// Mints a token; returns it with its expiry (unix seconds).
    pub fn mint(&self, req: MintRequest) -> Result<(String, i64), TokenError> {
        if req.user_id.is_empty() || req.user_id.len() > 128 {
            return Err(TokenError::Invalid("userId must be 1 to 128 characters".into()));
        }
        let now = unix_now();
        let ttl = req.ttl.unwrap_or(self.default_ttl).min(self.max_ttl).as_secs().max(1) as i64;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: req.user_id,
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: switchboard_actors::ids::random_id(),
            room: req.room_id,
            name: req.name,
            grants: req.grants.unwrap_or_default(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        Ok((token, claims.exp))
    }

    /// Signs arbitrary claims (tests use it to make expired and future tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    /// Verifies a token strictly.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Invalid("algorithm not allowed".into())
                }
                ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience".into()),
                ErrorKind::MissingRequiredClaim(c) => TokenError::Invalid(format!("missing claim {c}")),
                _ => TokenError::Invalid("malformed token".into()),
            }
        })
    }
}

/// A fingerprint of the signing secret that peers compare without learning the secret:
/// HMAC-SHA1 of a fixed text, hex, first 16 characters.
pub fn secret_fingerprint(secret: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(b"switchboard cluster secret fingerprint v1");
    mac.finalize().into_bytes().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The signing secret: from config, else from `<data_dir>/auth_secret`, generated (mode 0600)
/// on first start.
pub fn load_or_create_secret(cfg: &AuthConfig, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &cfg.secret {
        return Ok(secret.as_bytes().to_vec());
    }
    Ok(secret_file(data_dir, "auth_secret", "a token signing secret")?.into_bytes())
}

/// The TURN shared secret (coturn's `static-auth-secret`) of the embedded TURN server: from
/// config, else from `<data_dir>/turn_secret`, generated (mode 0600) on first start, beside
/// the token signing secret and kept across restarts so that credentials already handed out
/// stay valid.
pub fn load_or_create_turn_secret(cfg: &IceConfig, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(secret) = &cfg.turn_secret {
        return Ok(secret.clone());
    }
    secret_file(data_dir, "turn_secret", "a TURN shared secret")
}

/// A secret of at least 32 characters kept in `<data_dir>/<name>`, made on first use.
fn secret_file(data_dir: &Path, name: &str, what: &str) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is shorter than 32 characters; delete it to regenerate", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    std::fs::create_dir_all(data_dir)?;
    let secret: String = (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
    write_private(&path, &secret)?;
    tracing::info!(path = %path.display(), "generated {what}");
    Ok(secret)
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(content.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> Authority {
        Authority::new(b"0123456789abcdef0123456789abcdef", &AuthConfig::default())
    }

    #[test]
    fn minted_tokens_verify() {
        let a = authority();
        let (token, exp) = a.mint(MintRequest { user_id: "alice".into(), ..Default::default() }).expect("mint");
        let claims = a.verify(&token).expect("verify");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, exp);
        assert!(claims.grants.can_publish && !claims.grants.room_admin);
    }

    #[test]
    fn grants_read_todays_names_and_earlier_ones_and_refuse_unknown_ones() {
        let g: Grants = serde_json::from_str(r#"{"canPublish":false,"roomAdmin":true}"#).expect("new names");
        assert!(!g.can_publish && g.room_admin && g.can_subscribe && g.room_create);
        let old: Grants = serde_json::from_str(r#"{"publish":false,"chat":false,"admin":true}"#).expect("old");
        assert!(!old.can_publish && !old.can_publish_data && old.room_admin);
        assert!(serde_json::from_str::<Grants>(r#"{"canPublsh":false}"#).is_err(), "a typo is refused");
        let wire = serde_json::to_value(Grants::default()).expect("serialize");
        assert_eq!(wire["canPublishData"], true);
        assert_eq!(serde_json::from_value::<Grants>(wire).expect("round trip"), Grants::default());
    }

    #[test]
    fn forged_and_none_tokens_fail() {
        let a = authority();
        let other = Authority::new(b"another-secret-another-secret-xx", &AuthConfig::default());
        let (token, _) = other.mint(MintRequest { user_id: "mallory".into(), ..Default::default() }).expect("mint");
        assert_eq!(a.verify(&token).unwrap_err().code(), "token_invalid");
        // alg:none: header {"alg":"none","typ":"JWT"}, same claims, empty signature.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = token.split('.').nth(1).expect("payload");
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), payload);
        assert_eq!(a.verify(&none).unwrap_err().code(), "token_invalid");
    }

    #[test]
    fn time_claims_are_enforced() {
        let a = authority();
        let now = unix_now();
        let mut c = Claims {
            iss: "switchboard".into(),
            aud: "switchboard".into(),
            sub: "bob".into(),
            exp: now - 60,
            nbf: now - 120,
            iat: now - 120,
            jti: "j".into(),
            room: None,
            name: None,
            grants: Grants::default(),
        };
        assert_eq!(a.verify(&a.sign(&c)).unwrap_err().code(), "token_expired");
        c.exp = now + 600;
        c.nbf = now + 300;
        assert_eq!(a.verify(&a.sign(&c)).unwrap_err().code(), "token_not_yet_valid");
        c.nbf = now;
        c.aud = "someone-else".into();
        assert_eq!(a.verify(&a.sign(&c)).unwrap_err().code(), "token_invalid");
    }

    #[test]
    fn secret_file_is_private_and_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_secret(&AuthConfig::default(), dir.path()).expect("create");
        let again = load_or_create_secret(&AuthConfig::default(), dir.path()).expect("read");
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("auth_secret")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn turn_secret_is_configured_or_generated_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_turn_secret(&IceConfig::default(), dir.path()).expect("create");
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_turn_secret(&IceConfig::default(), dir.path()).expect("read"), first);
        let auth = load_or_create_secret(&AuthConfig::default(), dir.path()).expect("auth secret");
        assert_ne!(auth, first.as_bytes(), "two secrets, two files");
        let configured = IceConfig { turn_secret: Some("from-config".into()), ..IceConfig::default() };
        assert_eq!(load_or_create_turn_secret(&configured, dir.path()).expect("configured"), "from-config");
    }
}
