//! Payloads that cross nodes: serde types encoded with bincode 2 behind a newtype, because
//! ractor's `BytesConvertable` covers only primitives and the orphan rule forbids impls for
//! foreign types.

use ractor::BytesConvertable;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A serde value carried as bincode bytes in a cluster message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bincode<T>(pub T);

impl<T: Serialize + DeserializeOwned> BytesConvertable for Bincode<T> {
    fn into_bytes(self) -> Vec<u8> {
        // Encoding plain serde structs into a Vec cannot fail.
        bincode::serde::encode_to_vec(&self.0, bincode::config::standard()).unwrap_or_default()
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        // ractor's `from_bytes` cannot return an error; its cluster codegen catches a panic
        // here and drops the message, which is the right outcome for bytes we cannot read.
        match bincode::serde::decode_from_slice(&bytes, bincode::config::standard()) {
            Ok((value, _)) => Bincode(value),
            Err(e) => panic!("undecodable cluster payload: {e}"),
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
    fn round_trips() {
        let v = Sample { id: "n1".into(), n: 7 };
        let bytes = Bincode(v).into_bytes();
        assert_eq!(Bincode::<Sample>::from_bytes(bytes).0, Sample { id: "n1".into(), n: 7 });
    }
}
