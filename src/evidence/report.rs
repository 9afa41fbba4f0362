//! Signed reports: a report is JSON; its signature is Ed25519 over the RFC 8785 (JCS)
//! canonical form of the report without its `signature` member, written base64url without
//! padding; `keyId` names the key. A room's reports form a chain: each one's
//! `prevReportHash` is the lowercase hex SHA-256 of the JCS bytes of the room's previous report,
//! signature included. Anyone with the node's public key set can check all of it offline.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A node's signing key and its id.
pub struct NodeKey {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret half.
        f.debug_struct("NodeKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The file under the data directory that holds the key's 32 secret bytes.
pub const KEY_FILE: &str = "report_signing_key";

impl NodeKey {
    /// From 32 secret bytes.
    pub fn from_secret(secret: [u8; 32]) -> NodeKey {
        let key = SigningKey::from_bytes(&secret);
        let kid = key_id(&key.verifying_key());
        NodeKey { kid, key }
    }

    /// The key in `dir/report_signing_key`, generated (and written with mode 0600) at first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<NodeKey> {
        let path = dir.join(KEY_FILE);
        match NodeKey::load(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let secret: [u8; 32] = rand::random();
                write_private(&path, &secret)?;
                Ok(NodeKey::from_secret(secret))
            }
            other => other,
        }
    }

    /// The key in `path` (its 32 secret bytes, as `load_or_create` writes them): a key
    /// configured for the node, or shared by the nodes of a cluster.
    pub fn load(path: &Path) -> std::io::Result<NodeKey> {
        let bytes = std::fs::read(path)?;
        let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not 32 bytes", path.display()))
        })?;
        Ok(NodeKey::from_secret(secret))
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (RFC 8037): `{"kid","kty":"OKP","crv":"Ed25519","x"}`.
    pub fn public_jwk(&self) -> Value {
        json!({"kid": self.kid, "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes())})
    }

    /// Signs `report` in place: sets `keyId`, then `signature` over the JCS form of the rest.
    pub fn sign(&self, report: &mut Value) -> Result<(), String> {
        let obj = report.as_object_mut().ok_or("a report is a JSON object")?;
        obj.remove("signature");
        obj.insert("keyId".into(), Value::String(self.kid.clone()));
        let bytes = serde_jcs::to_vec(&report).map_err(|e| e.to_string())?;
        let signature = self.key.sign(&bytes);
        if let Some(obj) = report.as_object_mut() {
            obj.insert("signature".into(), Value::String(URL_SAFE_NO_PAD.encode(signature.to_bytes())));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A key's id: the first 16 hex digits of the SHA-256 of its public bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    Sha256::digest(key.to_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The hash the next report of the room chains to: lowercase hex SHA-256 of the report's JCS
/// bytes, signature included.
pub fn report_hash(report: &Value) -> Result<String, String> {
    let bytes = serde_jcs::to_vec(report).map_err(|e| e.to_string())?;
    Ok(Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// The public keys of a key set document (`{"keys":[{"kid","kty","crv","x"}]}`).
pub fn parse_key_set(doc: &Value) -> Result<Vec<(String, VerifyingKey)>, String> {
    let keys = doc.get("keys").and_then(Value::as_array).ok_or("a key set has a \"keys\" array")?;
    keys.iter()
        .map(|k| {
            if k.get("kty") != Some(&json!("OKP")) || k.get("crv") != Some(&json!("Ed25519")) {
                return Err("only OKP Ed25519 keys are used".to_owned());
            }
            let kid = k.get("kid").and_then(Value::as_str).ok_or("a key has a kid")?;
            let x = k.get("x").and_then(Value::as_str).ok_or("a key has x")?;
            let bytes: [u8; 32] = URL_SAFE_NO_PAD
                .decode(x)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("key {kid}: x is not 32 bytes of base64url"))?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|e| format!("key {kid}: {e}"))?;
            Ok((kid.to_owned(), key))
        })
        .collect()
}

/// Checks a report's signature against a key set.
pub fn verify_signature(report: &Value, keys: &[(String, VerifyingKey)]) -> Result<(), String> {
    let kid = report.get("keyId").and_then(Value::as_str).ok_or("the report has no keyId")?;
    let signature = report.get("signature").and_then(Value::as_str).ok_or("the report has no signature")?;
    let (_, key) = keys.iter().find(|(k, _)| k == kid).ok_or_else(|| format!("no key {kid} in the key set"))?;
    let bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 64 bytes of base64url")?;
    let mut unsigned = report.clone();
    if let Some(obj) = unsigned.as_object_mut() {
        obj.remove("signature");
    }
    let message = serde_jcs::to_vec(&unsigned).map_err(|e| e.to_string())?;
    key.verify_strict(&message, &Signature::from_bytes(&bytes)).map_err(|_| "the signature does not match".to_owned())
}

/// Checks that each report chains to the one before it (oldest first; the first chains to
/// nothing or to what came before the list).
pub fn verify_chain(reports: &[Value]) -> Result<(), String> {
    for pair in reports.windows(2) {
        let expected = report_hash(&pair[0])?;
        let stated = pair[1].get("prevReportHash").and_then(Value::as_str).unwrap_or("null");
        if stated != expected {
            let id = pair[1].get("reportId").and_then(Value::as_str).unwrap_or("?");
            return Err(format!("report {id} chains to {stated}, the report before it hashes to {expected}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: u32, prev: Option<String>) -> Value {
        json!({
            "reportId": format!("rep_{n}"),
            "roomId": "r1",
            "score": 0.8312,
            "regions": [{"x": 10, "y": 20, "width": 30, "height": 40, "area": 1200, "score": 0.41}],
            "verdict": "changed",
            "prevReportHash": prev,
            "createdAt": "2026-12-01T10:00:00.000Z",
        })
    }

    #[test]
    fn signed_reports_verify_and_tampering_is_caught() {
        let key = NodeKey::from_secret([7; 32]);
        let keys = parse_key_set(&json!({"keys": [key.public_jwk()]})).unwrap();
        let mut r = report(1, None);
        key.sign(&mut r).unwrap();
        assert_eq!(r["keyId"], key.kid());
        verify_signature(&r, &keys).unwrap();
        // Member order does not matter (JCS), content does.
        let reordered: Value = serde_json::from_str(&serde_jcs::to_string(&r).unwrap()).unwrap();
        verify_signature(&reordered, &keys).unwrap();
        let mut tampered = r.clone();
        tampered["score"] = json!(0.99);
        assert_eq!(verify_signature(&tampered, &keys).unwrap_err(), "the signature does not match");
        let other = NodeKey::from_secret([8; 32]);
        let wrong = parse_key_set(&json!({"keys": [other.public_jwk()]})).unwrap();
        assert!(verify_signature(&r, &wrong).unwrap_err().contains("no key"));
    }

    #[test]
    fn chains_link_each_report_to_the_one_before() {
        let key = NodeKey::from_secret([9; 32]);
        let mut first = report(1, None);
        key.sign(&mut first).unwrap();
        let mut second = report(2, Some(report_hash(&first).unwrap()));
        key.sign(&mut second).unwrap();
        verify_chain(&[first.clone(), second.clone()]).unwrap();
        let mut altered = first.clone();
        altered["verdict"] = json!("unchanged");
        key.sign(&mut altered).unwrap();
        assert!(verify_chain(&[altered, second]).unwrap_err().contains("rep_2"));
        assert_eq!(report_hash(&first).unwrap().len(), 64);
    }

    #[test]
    fn the_key_is_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeKey::load_or_create(dir.path()).unwrap();
        let b = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.kid(), b.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains("key:"), "Debug shows no secret");
        // A configured key is read as it is, never made up.
        assert_eq!(NodeKey::load(&dir.path().join(KEY_FILE)).unwrap().kid(), a.kid());
        assert_eq!(NodeKey::load(&dir.path().join("absent")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        std::fs::write(dir.path().join("short"), [1u8; 5]).unwrap();
        assert!(NodeKey::load(&dir.path().join("short")).unwrap_err().to_string().contains("not 32 bytes"));
    }

    #[test]
    fn jcs_orders_members_and_formats_numbers_as_rfc_8785_says() {
        // RFC 8785 §3.2.2 and §3.2.3: sorted members, ECMAScript number formatting.
        let v = json!({"b": 1, "a": [1.0, 0.000001, 1e21, -0.0, 0.8312], "c": "é"});
        assert_eq!(serde_jcs::to_string(&v).unwrap(), r#"{"a":[1,0.000001,1e+21,0,0.8312],"b":1,"c":"é"}"#);
    }
}
