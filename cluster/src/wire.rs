//! Payloads that cross nodes: serde types encoded with bincode 2 behind a newtype, because
//! ractor's `BytesConvertable` covers only primitives and the orphan rule forbids impls for
//! foreign types.
//!
//! What a peer sends is untrusted input. Frames are bounded by ractor_cluster (16 MiB; a frame
//! that is too long or not a valid protobuf closes that link, and only that one); the bincode
//! inside is decoded with the same bound, so no length prefix can make the node allocate more,
//! and a payload that does not decode is dropped and counted
//! (`switchboard_cluster_undecodable_payloads_total`), never a panic of the node.

use ractor::BytesConvertable;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A serde value carried as bincode bytes in a cluster message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bincode<T>(pub T);

/// The most a payload may claim to hold: ractor_cluster's own frame limit.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD>()
}

/// Decodes a payload a peer sent, bounded by [`MAX_PAYLOAD`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, config()).map(|(value, _)| value)
}

impl<T: Serialize + DeserializeOwned> BytesConvertable for Bincode<T> {
    fn into_bytes(self) -> Vec<u8> {
        // Encoding plain serde structs into a Vec cannot fail.
        bincode::serde::encode_to_vec(&self.0, config()).unwrap_or_default()
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match decode(&bytes) {
            Ok(value) => Bincode(value),
            Err(e) => {
                // ractor's `from_bytes` cannot return an error: its cluster codegen catches this
                // unwind and drops the message (the process is built to unwind, not abort).
                metrics::counter!("switchboard_cluster_undecodable_payloads_total").increment(1);
                tracing::warn!(error = %e, bytes = bytes.len(), "dropped an undecodable payload from a peer");
                std::panic::resume_unwind(Box::new("undecodable cluster payload"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        id: String,
        n: u64,
    }

    #[test]
    fn a_length_prefix_past_the_bound_is_an_error_not_an_allocation() {
        // A string claiming 2^40 bytes: refused by the bound before anything is allocated.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<String>(&bytes).is_err());
        assert!(decode::<Sample>(&[0xff, 0x00]).is_err(), "garbage");
        let undecodable = std::panic::catch_unwind(|| Bincode::<Sample>::from_bytes(vec![5, 1]));
        assert!(undecodable.is_err(), "an undecodable payload unwinds into ractor's catch, which drops it");
    }

    #[test]
    fn round_trips() {
        let v = Sample { id: "n1".into(), n: 7 };
        let bytes = Bincode(v).into_bytes();
        assert_eq!(Bincode::<Sample>::from_bytes(bytes).0, Sample { id: "n1".into(), n: 7 });
    }
}
