//! Identity of a node in the cluster.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's id: chosen by the operator (`--node-id`), or generated at first start.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Checks and wraps an id: 1 to 64 characters of `[A-Za-z0-9._-]`.
    pub fn parse(id: &str) -> Result<NodeId, String> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok { Ok(NodeId(id.to_owned())) } else { Err(format!("invalid node id {id:?}: use 1-64 of [A-Za-z0-9._-]")) }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        assert!(NodeId::parse("n1").is_ok());
        assert!(NodeId::parse("").is_err());
        assert!(NodeId::parse("a b").is_err());
    }
}
