//! The first bytes of a node link: who is at each end, and proof that the dialer knows the
//! cluster's cookie.
//!
//! The acceptor speaks first: magic, its node id and a fresh 16-byte nonce. The dialer checks
//! that it reached the node it meant to, and answers with magic, its own node id and an
//! HMAC-SHA256 under the cookie of both ids and the nonce; the acceptor checks it in constant
//! time. With cluster TLS this runs inside the mutually authenticated TLS session, so a peer
//! needs both a certificate from the cluster's CA and the cookie; without TLS (dev mode) the
//! cookie never crosses the wire, only the proof.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 4] = b"SBL1";
const NONCE: usize = 16;
const MAC: usize = 32;
/// How long either side waits for the other's handshake bytes.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn proof(cookie: &str, nonce: &[u8], dialer: &str, acceptor: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie.as_bytes()).expect("any key length");
    mac.update(b"switchboard node link\0");
    mac.update(nonce);
    mac.update(dialer.as_bytes());
    mac.update(b"\0");
    mac.update(acceptor.as_bytes());
    mac
}

async fn write_id<S: AsyncWrite + Unpin>(s: &mut S, id: &str, tail: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(5 + id.len() + tail.len());
    out.extend_from_slice(MAGIC);
    out.push(id.len().min(255) as u8);
    out.extend_from_slice(&id.as_bytes()[..id.len().min(255)]);
    out.extend_from_slice(tail);
    s.write_all(&out).await?;
    s.flush().await
}

async fn read_id<S: AsyncRead + Unpin>(s: &mut S, tail: &mut [u8]) -> Result<String, String> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.map_err(|e| e.to_string())?;
    if &head[..4] != MAGIC {
        return Err("not a Switchboard node link".into());
    }
    let mut id = vec![0u8; head[4] as usize];
    s.read_exact(&mut id).await.map_err(|e| e.to_string())?;
    s.read_exact(tail).await.map_err(|e| e.to_string())?;
    String::from_utf8(id).map_err(|_| "node id is not UTF-8".to_owned())
}

/// The acceptor's side: returns the dialer's node id once its proof checks out.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, me: &str, cookie: &str) -> Result<String, String> {
    let nonce: [u8; NONCE] = rand::random();
    let exchange = async {
        write_id(s, me, &nonce).await.map_err(|e| e.to_string())?;
        let mut mac = [0u8; MAC];
        let peer = read_id(s, &mut mac).await?;
        proof(cookie, &nonce, &peer, me)
            .verify_slice(&mac)
            .map_err(|_| format!("{peer:?} does not know the cookie"))?;
        Ok(peer)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await.map_err(|_| "handshake timed out".to_owned())?
}

/// The dialer's side: fails unless the acceptor is node `expected`.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &str,
    expected: &str,
    cookie: &str,
) -> Result<(), String> {
    let exchange = async {
        let mut nonce = [0u8; NONCE];
        let peer = read_id(s, &mut nonce).await?;
        if peer != expected {
            return Err(format!("reached node {peer:?}, not {expected:?}"));
        }
        let mac = proof(cookie, &nonce, me, &peer).finalize().into_bytes();
        write_id(s, me, &mac).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await.map_err(|_| "handshake timed out".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cookie_decides() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (accepted, dialled) =
            tokio::join!(accept(&mut a, "n2", "cookie-one-cookie"), dial(&mut b, "n1", "n2", "cookie-one-cookie"));
        assert_eq!(accepted, Ok("n1".to_owned()));
        assert_eq!(dialled, Ok(()));

        let (mut a, mut b) = tokio::io::duplex(1024);
        let (accepted, _) =
            tokio::join!(accept(&mut a, "n2", "cookie-one-cookie"), dial(&mut b, "n1", "n2", "another-cookie"));
        assert!(accepted.unwrap_err().contains("cookie"));

        let (mut a, b) = tokio::io::duplex(1024);
        let dialling = async move {
            let mut b = b;
            dial(&mut b, "n1", "n2", "c").await
        };
        let (_, dialled) = tokio::join!(accept(&mut a, "n3", "c"), dialling);
        assert!(dialled.unwrap_err().contains("not \"n2\""));
    }
}
