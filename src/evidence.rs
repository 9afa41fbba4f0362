//! The evidence store: artifacts (snapshots, baselines, heatmaps, reports) addressed by their
//! content id ([`cid`]), written once and never overwritten. This is the local folder backend
//! (`<data-dir>/evidence/`), and the signed reports that refer to them ([`report`]); a file appears under its CID only complete (written aside, then
//! linked into place), and a CID that exists already is left as it is.

pub mod cid;
pub mod report;

use std::path::{Path, PathBuf};

/// A local, content-addressed, write-once store.
#[derive(Clone, Debug)]
pub struct EvidenceStore {
    root: PathBuf,
}

impl EvidenceStore {
    /// The store in `root` (created if needed).
    pub fn local(root: &Path) -> std::io::Result<EvidenceStore> {
        std::fs::create_dir_all(root.join("incoming"))?;
        Ok(EvidenceStore { root: root.to_path_buf() })
    }

    fn path_of(&self, cid: &str) -> PathBuf {
        // Two levels of fan-out keep directories small.
        self.root.join(&cid[cid.len() - 2..]).join(cid)
    }

    /// Stores `bytes`; returns their CID. Storing the same bytes again changes nothing.
    pub async fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
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

    /// The bytes stored under `cid`, if any. Anything that is not a CID is simply not found.
    pub async fn get(&self, cid: &str) -> std::io::Result<Option<Vec<u8>>> {
        if !cid::is_cid(cid) {
            return Ok(None);
        }
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
        let path = store.path_of(&cid);
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(store.put(b"snapshot bytes").await.unwrap(), cid);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(store.get("../../etc/passwd").await.unwrap(), None);
        assert_eq!(store.get(&cid::cid_of(b"never stored")).await.unwrap(), None);
        assert_eq!(std::fs::read_dir(dir.path().join("incoming")).unwrap().count(), 0, "nothing left aside");
    }
}
