//! What a connection's token allows, checked on every message before it goes anywhere, and
//! the token refreshed in-session (`token` from the client, `refresh_token` from the node
//! before the current one expires, the connection closed when it does).

use super::*;
use crate::auth::Grants;

/// Why `grants` do not allow `message`, or `None` when they do.
pub(super) fn refusal(grants: &Grants, message: &ClientMessage) -> Option<String> {
    let data = |what: &str| (!grants.can_publish_data).then(|| format!("this token may not send data ({what})"));
    match message {
        ClientMessage::Join { .. } | ClientMessage::LobbyJoin { .. } if !grants.room_join => {
            Some("this token may not join rooms".into())
        }
        ClientMessage::Offer { sdp, .. } | ClientMessage::Answer { sdp, .. } => sdp_refusal(grants, sdp),
        ClientMessage::IceCandidate { .. } | ClientMessage::Stats { .. }
            if !grants.can_publish && !grants.can_subscribe =>
        {
            Some("this token may neither publish nor subscribe to media".into())
        }
        ClientMessage::Control { .. } => data("control"),
        ClientMessage::Overlay { .. } => data("overlay"),
        ClientMessage::Chat { .. } => data("chat"),
        ClientMessage::EndCall {} => data("end_call"),
        _ => None,
    }
}

/// Whether an SDP's media sections send or receive what the grants do not allow. Only read when
/// a grant is missing: a full token's SDP passes untouched.
fn sdp_refusal(grants: &Grants, sdp: &RawJson) -> Option<String> {
    if grants.can_publish && grants.can_subscribe && grants.can_publish_data {
        return None;
    }
    // The SDP travels as the client's JSON text; read here, it is decoded once.
    let d = directions(&sdp.decoded_string().unwrap_or_default());
    if d.sends && !grants.can_publish {
        return Some("this token may not publish media: offer or answer its media recvonly".into());
    }
    if d.receives && !grants.can_subscribe {
        return Some("this token may not subscribe to media: offer or answer its media sendonly".into());
    }
    if d.data && !grants.can_publish_data {
        return Some("this token may not send data: no data channel (m=application)".into());
    }
    None
}

/// What an SDP's media sections do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directions {
    /// Some audio or video section sends (`sendrecv`, `sendonly`, or no direction: sendrecv).
    sends: bool,
    /// Some audio or video section receives (`sendrecv`, `recvonly`, or none given).
    receives: bool,
    /// A data channel section (`m=application`).
    data: bool,
}

fn directions(sdp: &str) -> Directions {
    let mut out = Directions::default();
    let mut session = "sendrecv";
    // (is media, its direction) of the section being read; None before the first m= line.
    let mut section: Option<(bool, Option<&str>)> = None;
    let close = |section: Option<(bool, Option<&str>)>, session: &str, out: &mut Directions| {
        if let Some((true, dir)) = section {
            let dir = dir.unwrap_or(session);
            out.sends |= dir == "sendrecv" || dir == "sendonly";
            out.receives |= dir == "sendrecv" || dir == "recvonly";
        }
    };
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            close(section, session, &mut out);
            let media = m.split(' ').next().unwrap_or("");
            out.data |= media == "application";
            section = Some((media == "audio" || media == "video", None));
        } else if let Some(dir) =
            line.strip_prefix("a=").filter(|a| matches!(*a, "sendrecv" | "sendonly" | "recvonly" | "inactive"))
        {
            match section.as_mut() {
                Some((_, d)) => *d = Some(dir),
                None => session = dir,
            }
        }
    }
    close(section, session, &mut out);
    out
}

/// The client sends a fresh token: for the same user, valid, and then the connection's.
pub(super) async fn refresh(myself: &Mailbox, state: &mut ConnectionState, token: String, reference: Option<Value>) {
    let r = reference.as_ref();
    let claims = match state.app.authority.verify(&token) {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                crate::auth::TokenError::Expired => ErrorCode::TokenExpired,
                _ => ErrorCode::TokenInvalid,
            };
            return send_error(myself, state, code, &e.to_string(), r).await;
        }
    };
    if claims.sub != state.claims.sub {
        let message = "a refreshed token must be for the same user";
        return send_error(myself, state, ErrorCode::Forbidden, message, r).await;
    }
    if let Some(j) = &state.joined
        && claims.room.as_ref().is_some_and(|room| room != j.room_id.as_str())
    {
        let message = format!("this token is for another room than {}", j.room_id);
        return send_error(myself, state, ErrorCode::RoomForbidden, &message, r).await;
    }
    let expires_at = claims.exp;
    state.claims = claims;
    state.token_warned = false;
    metrics::counter!("switchboard_token_refreshes_total").increment(1);
    let body = ServerMessage::TokenRefreshed { expires_at, reference: r }.to_body();
    Box::pin(reply(myself, state, &body)).await;
}

/// When the current token's timer should next fire: a while before it expires (to send
/// `refresh_token`), then when it has expired (with the verifier's leeway: when a new
/// connection with it would be refused).
pub(super) fn deadline(state: &ConnectionState) -> tokio::time::Instant {
    let c = &state.claims;
    let lifetime = Duration::from_secs((c.exp - c.iat).max(1) as u64);
    let lead = (lifetime / 4).min(Duration::from_secs(60));
    let exp_ms = c.exp * 1000;
    let at_ms = if state.token_warned {
        exp_ms + state.app.config.auth.leeway.as_millis() as i64
    } else {
        exp_ms - lead.as_millis() as i64
    };
    tokio::time::Instant::now() + Duration::from_millis((at_ms - now_ms()).max(0) as u64)
}

/// The token's timer fired: `refresh_token` the first time, the end of the connection the
/// second (a fresh token in between starts over).
pub(super) async fn timer_fired(myself: &Mailbox, state: &mut ConnectionState) {
    if !state.token_warned {
        state.token_warned = true;
        let body = ServerMessage::RefreshToken { expires_at: state.claims.exp }.to_body();
        return Box::pin(reply(myself, state, &body)).await;
    }
    metrics::counter!("switchboard_token_expiries_total").increment(1);
    let message = "the token expired; connect (or resume) with a fresh one";
    send_error(myself, state, ErrorCode::TokenExpired, message, None).await;
    close(myself, state, close_code::TOKEN_EXPIRED, "token expired").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECVONLY: &str = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
    const SENDRECV: &str = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn an_sdp_says_what_it_sends_and_receives() {
        assert_eq!(directions(RECVONLY), Directions { sends: false, receives: true, data: false });
        assert_eq!(directions(SENDRECV), Directions { sends: true, receives: true, data: true });
        // No direction attribute: the session's, else sendrecv.
        assert_eq!(
            directions("v=0\r\na=sendonly\r\nm=video 9 x 96\r\n"),
            Directions { sends: true, receives: false, data: false }
        );
        assert!(directions("m=audio 9 x 0\r\n").sends);
        assert_eq!(directions("m=audio 9 x 0\r\na=inactive\r\n"), Directions::default());
    }

    #[test]
    fn each_grant_refuses_what_it_covers() {
        let all = Grants::default();
        let offer = |sdp: &str| ClientMessage::Offer { peer_id: "p".into(), sdp: RawJson::string(sdp) };
        assert!(refusal(&all, &offer(SENDRECV)).is_none());
        let viewer = Grants { can_publish: false, ..Grants::default() };
        assert!(refusal(&viewer, &offer(SENDRECV)).is_some_and(|m| m.contains("publish")));
        assert!(refusal(&viewer, &offer(RECVONLY)).is_none(), "a viewer may receive");
        let deaf = Grants { can_subscribe: false, ..Grants::default() };
        assert!(refusal(&deaf, &offer(RECVONLY)).is_some_and(|m| m.contains("subscribe")));
        let mute = Grants { can_publish_data: false, ..Grants::default() };
        assert!(refusal(&mute, &ClientMessage::Chat { text: "hi".into() }).is_some());
        assert!(refusal(&mute, &ClientMessage::EndCall {}).is_some());
        assert!(refusal(&mute, &offer(SENDRECV)).is_some_and(|m| m.contains("data channel")));
        let outsider = Grants { room_join: false, ..Grants::default() };
        assert!(refusal(&outsider, &ClientMessage::Join { room_id: "r".into(), display_name: None }).is_some());
    }
}
