//! The embedded TURN server's credentials: exactly those `ice.rs` hands out, in coturn's
//! shared-secret scheme (`use-auth-secret`). The username is `"<expiry-unix-seconds>:<userId>"`
//! and the password `base64(HMAC-SHA1(secret, username))`, so the server needs no user table:
//! it recomputes the password from the username. `turn`'s own `LongTermAuthHandler` reads the
//! whole username as a number and cannot take these.

use std::net::SocketAddr;

/// Why a credential was refused (the `reason` label of `switchboard_turn_auth_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The username is not `<expiry>:<user>`.
    Malformed,
    /// Its expiry has passed (refused when an allocation is asked for).
    Expired,
    /// The request names another realm than this server's.
    Realm,
    /// The message integrity does not match: a wrong password or another secret.
    Password,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Expired => "expired",
            Refusal::Realm => "realm",
            Refusal::Password => "password",
        }
    }
}

/// The credential check: the shared secret and the realm.
pub struct SharedSecret {
    secret: String,
    realm: String,
}

impl SharedSecret {
    pub fn new(secret: &str, realm: &str) -> SharedSecret {
        SharedSecret { secret: secret.to_owned(), realm: realm.to_owned() }
    }

    /// The long-term key (`MD5(username:realm:password)`) for `username`, whatever its expiry:
    /// the key is what the request's message integrity is checked with.
    pub fn key(&self, username: &str, realm: &str) -> Result<Vec<u8>, Refusal> {
        if realm != self.realm {
            return Err(Refusal::Realm);
        }
        expiry_of(username)?;
        let password = crate::ice::turn_password(&self.secret, username);
        Ok(::turn::auth::generate_auth_key(username, realm, &password))
    }

    /// Whether `username` may still make an allocation at `now` (unix seconds). It may until
    /// the end of its expiry second, as with coturn.
    pub fn current(username: &str, now: i64) -> Result<(), Refusal> {
        if expiry_of(username)? < now { Err(Refusal::Expired) } else { Ok(()) }
    }
}

/// The expiry of a `<digits>:<user>` username (the user part may itself hold colons).
fn expiry_of(username: &str) -> Result<i64, Refusal> {
    let (expiry, user) = username.split_once(':').ok_or(Refusal::Malformed)?;
    if expiry.is_empty() || user.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Malformed);
    }
    expiry.parse().map_err(|_| Refusal::Malformed)
}

/// The `turn` server asks this for the key of every authenticated request (Allocate, Refresh,
/// CreatePermission, ChannelBind). Expiry is not checked here: the listener's guard refuses an
/// expired credential's Allocate before the server sees it, and an allocation made in time
/// lives on while its client refreshes it (a credential admits a client; it does not cut a
/// call short at its expiry).
impl ::turn::auth::AuthHandler for SharedSecret {
    fn auth_handle(&self, username: &str, realm: &str, _src: SocketAddr) -> Result<Vec<u8>, ::turn::Error> {
        self.key(username, realm).map_err(|r| ::turn::Error::Other(format!("credential refused: {}", r.label())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_coturn_scheme() {
        let auth = SharedSecret::new("north", "switchboard");
        let password = crate::ice::turn_password("north", "1700000000:alice");
        assert_eq!(
            auth.key("1700000000:alice", "switchboard"),
            Ok(::turn::auth::generate_auth_key("1700000000:alice", "switchboard", &password))
        );
        // A user id may hold colons: only the first one separates the expiry.
        assert!(auth.key("1700000000:urn:user:7", "switchboard").is_ok());
    }

    #[test]
    fn malformed_usernames_and_other_realms_are_refused() {
        let auth = SharedSecret::new("north", "switchboard");
        for name in ["alice", "1700000000", ":alice", "1700000000:", "17x0:alice", "-5:alice", "99999999999999999999:a"]
        {
            assert_eq!(auth.key(name, "switchboard"), Err(Refusal::Malformed), "{name}");
        }
        assert_eq!(auth.key("1700000000:alice", "elsewhere"), Err(Refusal::Realm));
    }

    #[test]
    fn expiry_is_inclusive() {
        assert_eq!(SharedSecret::current("100:alice", 99), Ok(()));
        assert_eq!(SharedSecret::current("100:alice", 100), Ok(()));
        assert_eq!(SharedSecret::current("100:alice", 101), Err(Refusal::Expired));
        assert_eq!(SharedSecret::current("alice", 1), Err(Refusal::Malformed));
    }
}
