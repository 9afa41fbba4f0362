//! Content ids: CIDv1 with the raw codec (0x55) over a SHA-256 multihash (0x12, 32 bytes),
//! written as multibase base32 (`b` and lowercase RFC 4648 base32 without padding): the
//! `bafkrei…` strings IPFS tools print for the same bytes.

use sha2::{Digest, Sha256};

/// The CID's binary prefix: version 1, raw codec, sha2-256, 32 bytes.
const PREFIX: [u8; 4] = [0x01, 0x55, 0x12, 0x20];
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The CID of `bytes`.
pub fn cid_of(bytes: &[u8]) -> String {
    let mut binary = PREFIX.to_vec();
    binary.extend_from_slice(&Sha256::digest(bytes));
    format!("b{}", base32(&binary))
}

/// Whether `cid` is a well-formed CID of this kind (59 characters, `bafkrei…`).
pub fn is_cid(cid: &str) -> bool {
    cid.len() == 59 && cid.starts_with("bafkrei") && cid[1..].bytes().all(|c| ALPHABET.contains(&c))
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_match_what_ipfs_prints() {
        // The bytes "hello world" (no newline): the CID IPFS gives them as a raw leaf.
        assert_eq!(cid_of(b"hello world"), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
        // Of no bytes at all (checked with Python's hashlib and base64).
        assert_eq!(cid_of(b""), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
        assert!(is_cid(&cid_of(b"x")));
        assert!(!is_cid("bafkrei"));
        assert!(!is_cid(&cid_of(b"x").to_uppercase()));
    }

    #[test]
    fn base32_follows_rfc_4648() {
        // RFC 4648 §10 test vectors, lowercase, no padding.
        for (input, expected) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32(input.as_bytes()), expected);
        }
    }
}
