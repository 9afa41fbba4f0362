//! The evidence store: artifacts (snapshots, baselines, heatmaps) addressed by their content id
//! ([`cid`]), written once and never overwritten, and the signed reports that refer to them
//! ([`report`]). Two backends: a local folder (`<data-dir>/evidence/`, the default; a file
//! appears under its CID only complete, written aside then linked into place) or an
//! S3-compatible bucket (`evidence.url = "s3://bucket/prefix"`, written with
//! `If-None-Match: *`), which every node of a cluster can read.

pub mod cid;
pub mod report;

use std::path::{Path, PathBuf};

/// A content-addressed, write-once store.
#[derive(Clone, Debug)]
pub enum EvidenceStore {
    /// A folder on this node.
    Local(LocalEvidence),
    /// A bucket every node reaches.
    Bucket(BucketEvidence),
}

impl EvidenceStore {
    /// The folder `root` (created if needed).
    pub fn local(root: &Path) -> std::io::Result<EvidenceStore> {
        Ok(EvidenceStore::Local(LocalEvidence::new(root)?))
    }

    /// Whether every node reads the same store (a bucket), so any node may work any job.
    pub fn shared(&self) -> bool {
        matches!(self, EvidenceStore::Bucket(_))
    }

    /// Stores `bytes`; returns their CID. Storing the same bytes again changes nothing.
    pub async fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        match self {
            EvidenceStore::Local(l) => l.put(bytes).await,
            EvidenceStore::Bucket(b) => b.put(bytes).await,
        }
    }

    /// The bytes stored under `cid`, if any. Anything that is not a CID is simply not found.
    pub async fn get(&self, cid: &str) -> std::io::Result<Option<Vec<u8>>> {
        if !cid::is_cid(cid) {
            return Ok(None);
        }
        match self {
            EvidenceStore::Local(l) => l.get(cid).await,
            EvidenceStore::Bucket(b) => b.get(cid).await,
        }
    }
}

/// An S3-compatible bucket (through `object_store`).
#[derive(Clone, Debug)]
pub struct BucketEvidence {
    store: std::sync::Arc<object_store::aws::AmazonS3>,
    prefix: String,
}

/// How to reach a bucket.
#[derive(Clone, Debug, Default)]
pub struct BucketOptions {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// An endpoint other than AWS's (`http://127.0.0.1:9000` for a local S3-compatible server).
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// Whether plain `http://` endpoints are allowed.
    pub allow_http: bool,
    /// Credentials, when not from the environment.
    pub credentials: Option<(String, String)>,
}

impl BucketEvidence {
    /// A bucket; credentials come from the usual `AWS_*` environment variables.
    pub fn new(o: &BucketOptions) -> Result<BucketEvidence, String> {
        let rest = o.url.strip_prefix("s3://").ok_or("evidence.url must be s3://bucket[/prefix]")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("evidence.url names no bucket".into());
        }
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&o.region)
            .with_allow_http(o.allow_http);
        if let Some(endpoint) = &o.endpoint {
            b = b.with_endpoint(endpoint);
        }
        if let Some((id, secret)) = &o.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = b.build().map_err(|e| format!("evidence bucket: {e}"))?;
        Ok(BucketEvidence { store: std::sync::Arc::new(store), prefix: prefix.trim_matches('/').to_owned() })
    }

    fn path(&self, cid: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(cid)
        } else {
            object_store::path::Path::from(format!("{}/{cid}", self.prefix))
        }
    }

    async fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
        let cid = cid::cid_of(bytes);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&self.path(&cid), PutPayload::from(bytes.to_vec()), opts).await {
            // Written once: an existing object under a CID holds these very bytes.
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(cid),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    async fn get(&self, cid: &str) -> std::io::Result<Option<Vec<u8>>> {
        use object_store::ObjectStoreExt;
        match self.store.get(&self.path(cid)).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(|e| std::io::Error::other(e.to_string()))?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }
}

/// A folder on this node.
#[derive(Clone, Debug)]
pub struct LocalEvidence {
    root: PathBuf,
}

impl LocalEvidence {
    /// The folder `root` (created if needed).
    pub fn new(root: &Path) -> std::io::Result<LocalEvidence> {
        std::fs::create_dir_all(root.join("incoming"))?;
        Ok(LocalEvidence { root: root.to_path_buf() })
    }

    fn path_of(&self, cid: &str) -> PathBuf {
        // Two levels of fan-out keep directories small.
        self.root.join(&cid[cid.len() - 2..]).join(cid)
    }

    async fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let cid = cid::cid_of(bytes);
        let path = self.path_of(&cid);
        if tokio::fs::try_exists(&path).await? {
            return Ok(cid);
        }
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let incoming = self.root.join("incoming").join(format!("{cid}.{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&incoming, bytes).await?;
        // A hard link never replaces an existing file: whoever links first wins, and what is
        // there is the same bytes anyway.
        let linked = tokio::fs::hard_link(&incoming, &path).await;
        let _ = tokio::fs::remove_file(&incoming).await;
        match linked {
            Ok(()) => Ok(cid),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(cid),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, cid: &str) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path_of(cid)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn artifacts_are_stored_once_under_their_cid() {
        let dir = tempfile::tempdir().unwrap();
        let store = EvidenceStore::local(dir.path()).unwrap();
        let cid = store.put(b"snapshot bytes").await.unwrap();
        assert_eq!(cid, cid::cid_of(b"snapshot bytes"));
        assert_eq!(store.get(&cid).await.unwrap().as_deref(), Some(&b"snapshot bytes"[..]));
        // Again: the same CID, nothing rewritten.
        let EvidenceStore::Local(local) = &store else { unreachable!("a local store") };
        let path = local.path_of(&cid);
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(store.put(b"snapshot bytes").await.unwrap(), cid);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(store.get("../../etc/passwd").await.unwrap(), None);
        assert_eq!(store.get(&cid::cid_of(b"never stored")).await.unwrap(), None);
        assert_eq!(std::fs::read_dir(dir.path().join("incoming")).unwrap().count(), 0, "nothing left aside");
    }
}
