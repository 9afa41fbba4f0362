//! `switchboard verify-report FILE|URL`: checks a report offline (a file, with `--key-set`) or
//! against the node that made it (a URL: the key set, artifacts and the room's chain are fetched
//! from it). Integrity (every artifact's bytes hash to its CID), the signature and the chain are
//! reported apart; the command fails when any of them does.

use crate::evidence::cid::cid_of;
use crate::evidence::report::{parse_key_set, report_hash, verify_chain, verify_signature};
use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::path::PathBuf;

/// What to check.
#[derive(Debug)]
pub struct VerifyOptions {
    /// A report file, or `http(s)://node/reports/{id}`.
    pub target: String,
    /// The key set (`/.well-known/switchboard-keys.json` saved to a file); fetched for a URL.
    pub key_set: Option<PathBuf>,
    /// A token that may read the room (for the artifacts and the chain of a URL).
    pub token: Option<String>,
}

/// The three results.
#[derive(Debug)]
pub struct Verdicts {
    /// Artifacts against their CIDs (`None`: not checked, e.g. a file without the node).
    pub integrity: Option<Result<usize, String>>,
    /// The signature.
    pub signature: Result<(), String>,
    /// The link to the room's previous report (`None`: not checked).
    pub chain: Option<Result<(), String>>,
}

impl Verdicts {
    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.signature.is_ok() && !matches!(self.integrity, Some(Err(_))) && !matches!(self.chain, Some(Err(_)))
    }
}

async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> Result<reqwest::Response> {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        return Err(anyhow!("GET {url}: {}", resp.status()));
    }
    Ok(resp)
}

/// Checks the report.
pub async fn verify(o: &VerifyOptions) -> Result<Verdicts> {
    let http = reqwest::Client::new();
    let is_url = o.target.starts_with("http://") || o.target.starts_with("https://");
    let report: Value = if is_url {
        get(&http, &o.target, o.token.as_deref()).await?.json().await?
    } else {
        serde_json::from_slice(&std::fs::read(&o.target).with_context(|| format!("reading {}", o.target))?)?
    };
    let origin = is_url.then(|| {
        let after = o.target.find("://").map(|i| i + 3).unwrap_or(0);
        let end = o.target[after..].find('/').map(|i| after + i).unwrap_or(o.target.len());
        o.target[..end].to_owned()
    });
    let key_doc: Value = match (&o.key_set, &origin) {
        (Some(path), _) => {
            serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)?
        }
        (None, Some(base)) => {
            get(&http, &format!("{base}/.well-known/switchboard-keys.json"), None).await?.json().await?
        }
        (None, None) => return Err(anyhow!("a report file needs --key-set FILE")),
    };
    let keys = parse_key_set(&key_doc).map_err(|e| anyhow!("key set: {e}"))?;
    let signature = verify_signature(&report, &keys);
    let (mut integrity, mut chain) = (None, None);
    if let Some(base) = &origin {
        let mut checked = 0;
        let mut failed = None;
        for field in ["snapshotCid", "baselineCid", "heatmapCid"] {
            let Some(cid) = report.get(field).and_then(Value::as_str) else { continue };
            match get(&http, &format!("{base}/evidence/{cid}"), o.token.as_deref()).await {
                Ok(resp) => {
                    let bytes = resp.bytes().await?;
                    if cid_of(&bytes) == cid {
                        checked += 1;
                    } else {
                        failed = Some(format!("{field} {cid}: the bytes hash to {}", cid_of(&bytes)));
                    }
                }
                Err(e) => failed = Some(format!("{field} {cid}: {e}")),
            }
        }
        integrity = Some(failed.map_or(Ok(checked), Err));
        if let Some(room) = report.get("roomId").and_then(Value::as_str) {
            let doc: Value =
                get(&http, &format!("{base}/rooms/{room}/reports"), o.token.as_deref()).await?.json().await?;
            let all = doc.get("reports").and_then(Value::as_array).cloned().unwrap_or_default();
            let id = report.get("reportId");
            chain = Some(match all.iter().position(|r| r.get("reportId") == id) {
                Some(at) => {
                    let stated = report.get("prevReportHash").and_then(Value::as_str);
                    let expected = match at.checked_sub(1) {
                        Some(prev) => Some(report_hash(&all[prev]).map_err(|e| anyhow!(e))?),
                        None => None,
                    };
                    if stated != expected.as_deref() {
                        Err(format!("prevReportHash {stated:?}, the room's previous report hashes to {expected:?}"))
                    } else if all[at] != report {
                        Err("the node's copy of this report differs from this one".into())
                    } else {
                        verify_chain(&all[..=at])
                    }
                }
                None => Err("the room's chain does not hold this report".into()),
            });
        }
    }
    Ok(Verdicts { integrity, signature, chain })
}

/// Runs the command: prints the three results; an error when any failed.
pub async fn run(o: VerifyOptions) -> Result<()> {
    let v = verify(&o).await?;
    let show = |r: &Result<String, String>| match r {
        Ok(s) => format!("ok ({s})"),
        Err(e) => format!("FAILED: {e}"),
    };
    println!(
        "integrity: {}",
        match &v.integrity {
            Some(r) => show(&r.clone().map(|n| format!("{n} artifacts match their CIDs"))),
            None => "not checked (no node to fetch artifacts from)".into(),
        }
    );
    println!("signature: {}", show(&v.signature.clone().map(|()| "Ed25519 over the JCS form".into())));
    println!(
        "chain:     {}",
        match &v.chain {
            Some(r) => show(&r.clone().map(|()| "links to the room's previous report".into())),
            None => "not checked (no node to fetch the room's reports from)".into(),
        }
    );
    if v.ok() { Ok(()) } else { Err(anyhow!("the report did not verify")) }
}
