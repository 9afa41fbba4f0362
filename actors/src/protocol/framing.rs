//! Framing: how a serialized server message gets its per-session `seq`.

/// Frames a body with its sequence number: `{"seq":N,` + the body without its `{`.
pub fn with_seq(seq: u64, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 24);
    out.push_str("{\"seq\":");
    out.push_str(&seq.to_string());
    if body.len() > 2 {
        out.push(',');
    }
    out.push_str(body.get(1..).unwrap_or(""));
    out
}

/// The body of a framed message again, without its `seq` (it must have come from [`with_seq`]).
pub fn without_seq(framed: &str) -> String {
    framed.split_once(',').map_or_else(|| "{}".to_owned(), |(_, rest)| format!("{{{rest}"))
}

/// The same framed message under another number.
pub fn renumber(seq: u64, framed: &str) -> String {
    with_seq(seq, &without_seq(framed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_numbered_and_renumbered() {
        let framed = with_seq(7, r#"{"type":"pong"}"#);
        assert_eq!(framed, r#"{"seq":7,"type":"pong"}"#);
        assert_eq!(without_seq(&framed), r#"{"type":"pong"}"#);
        assert_eq!(renumber(41, &framed), r#"{"seq":41,"type":"pong"}"#);
        assert_eq!(with_seq(3, "{}"), r#"{"seq":3}"#);
    }
}
