//! A session's outbox: the frames its room sent it, numbered in the session's sequence (`seq`),
//! the latest of them kept so that a client that resumes on a new connection gets what it
//! missed, with the same numbers.

use crate::protocol::{Body, FrameKind, renumber, with_seq};
use std::collections::VecDeque;
use std::sync::Arc;

/// The frames a session was sent, numbered, for replay after a resume.
pub struct Outbox {
    /// Number of the next frame.
    pub next_seq: u64,
    frames: VecDeque<Kept>,
    /// Bytes of the frames kept.
    bytes: usize,
}

/// A kept frame: its number, the framed text (with `seq`) and its kind.
pub type Kept = (u64, Arc<str>, FrameKind);

/// Frames kept per session for replay.
pub const REPLAY_FRAMES: usize = 256;

/// Bytes of frames kept per session for replay: a session that is sent large frames keeps
/// fewer of them, so its memory stays bounded whatever it is sent.
pub const REPLAY_BYTES: usize = 256 * 1024;

impl Outbox {
    /// An empty outbox whose first frame gets number `seq` (at least 1).
    pub fn starting_at(seq: u64) -> Outbox {
        Outbox { next_seq: seq.max(1), frames: VecDeque::new(), bytes: 0 }
    }

    /// Adds a numbered frame at the end and drops the oldest past the caps (the newest stays).
    fn keep(&mut self, seq: u64, framed: Arc<str>, kind: FrameKind) {
        self.bytes += framed.len();
        self.frames.push_back((seq, framed, kind));
        while self.frames.len() > 1 && (self.frames.len() > REPLAY_FRAMES || self.bytes > REPLAY_BYTES) {
            if let Some((_, old, _)) = self.frames.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// Bytes of the frames kept.
    pub fn kept_bytes(&self) -> usize {
        self.bytes
    }

    /// Numbers `body`, keeps it, and returns its number and the framed text.
    pub fn push(&mut self, body: &Body) -> (u64, Arc<str>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let framed: Arc<str> = with_seq(seq, body).into();
        self.keep(seq, framed.clone(), body.kind);
        (seq, framed)
    }

    /// Numbers `body` without keeping it (a frame no resume can need: `joined`, which carries
    /// the very session id a resume names), and returns its number and the framed text.
    pub fn push_unkept(&mut self, body: &Body) -> (u64, Arc<str>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, with_seq(seq, body).into())
    }

    /// The next number and the frames kept, to hand to another room instance.
    pub fn snapshot(&self) -> (u64, Vec<(u64, String, FrameKind)>) {
        (self.next_seq, self.frames.iter().map(|(seq, f, kind)| (*seq, f.to_string(), *kind)).collect())
    }

    /// An outbox that continues where [`snapshot`](Self::snapshot) left off.
    pub fn restore(next_seq: u64, frames: Vec<(u64, String, FrameKind)>) -> Outbox {
        let mut outbox = Outbox::starting_at(next_seq);
        for (seq, f, kind) in frames {
            outbox.keep(seq, Arc::from(f), kind);
        }
        outbox
    }

    /// Forgets the frames numbered up to `seq` (the client confirmed it has them).
    pub fn forget_through(&mut self, seq: u64) {
        while self.frames.front().is_some_and(|f| f.0 <= seq) {
            if let Some((_, old, _)) = self.frames.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The number the next frame gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The number of the oldest frame kept (the next one's when none is).
    pub fn first_kept(&self) -> u64 {
        self.frames.front().map_or(self.next_seq, |f| f.0)
    }

    /// Renumbers everything by `delta` (kept frames and the next number), so that this
    /// outbox counts as a client whose numbering started elsewhere does. Frames that would
    /// get a number below 1 are dropped.
    pub fn shift(&mut self, delta: i64) {
        if delta == 0 {
            return;
        }
        let frames = std::mem::take(&mut self.frames);
        self.bytes = 0;
        for (seq, framed, kind) in frames {
            let new = seq as i64 + delta;
            if new < 1 {
                continue;
            }
            self.keep(new as u64, renumber(new as u64, &framed).into(), kind);
        }
        self.next_seq = (self.next_seq as i64 + delta).max(1) as u64;
    }

    /// The frames after `last`, if all of them are still kept.
    pub fn after(&self, last: u64) -> Option<Vec<Kept>> {
        let oldest = self.frames.front().map_or(self.next_seq, |f| f.0);
        if last + 1 < oldest {
            return None;
        }
        Some(self.frames.iter().filter(|f| f.0 > last).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(text: &str) -> Body {
        Body::new(text, FrameKind::Other)
    }

    #[test]
    fn numbers_keeps_and_replays() {
        let mut o = Outbox::starting_at(5);
        let (seq, framed) = o.push(&b(r#"{"type":"pong"}"#));
        assert_eq!((seq, &*framed), (5, r#"{"seq":5,"type":"pong"}"#));
        o.push(&b(r#"{"type":"a"}"#));
        o.push(&b(r#"{"type":"b"}"#));
        let after = o.after(5).expect("kept");
        assert_eq!(after.iter().map(|f| f.0).collect::<Vec<_>>(), [6, 7]);
        assert!(o.after(7).expect("kept").is_empty());
        for _ in 0..REPLAY_FRAMES {
            o.push(&b(r#"{"type":"x"}"#));
        }
        assert!(o.after(5).is_none(), "frame 6 is no longer kept");
    }

    #[test]
    fn confirmed_frames_are_forgotten() {
        let mut o = Outbox::starting_at(1);
        for _ in 0..5 {
            o.push(&b(r#"{"type":"x"}"#));
        }
        o.forget_through(3);
        assert_eq!(o.first_kept(), 4);
        assert!(o.after(2).is_none(), "a resume from before the confirmation cannot be served");
        assert_eq!(o.after(3).expect("kept").len(), 2);
        o.forget_through(10);
        assert_eq!(o.first_kept(), 6, "nothing kept: the next frame's number");
    }

    #[test]
    fn keeps_a_bounded_number_of_bytes() {
        let mut o = Outbox::starting_at(1);
        let big = format!("{{\"type\":\"offer\",\"sdp\":\"{}\"}}", "x".repeat(60_000));
        for _ in 0..20 {
            o.push(&b(&big));
        }
        assert!(o.kept_bytes() <= REPLAY_BYTES, "{} bytes kept", o.kept_bytes());
        assert_eq!(o.first_kept(), 21 - (REPLAY_BYTES / 60_000) as u64, "the newest frames are the ones kept");
        let huge = format!("{{\"type\":\"offer\",\"sdp\":\"{}\"}}", "x".repeat(REPLAY_BYTES));
        o.push(&b(&huge));
        assert_eq!(o.after(20).expect("kept").len(), 1, "a frame larger than the cap is still kept alone");
    }

    #[test]
    fn shifting_renumbers_kept_frames_and_the_next_one() {
        let mut o = Outbox::starting_at(1);
        o.push(&b(r#"{"type":"a"}"#));
        o.push(&b(r#"{"type":"b"}"#));
        o.shift(40);
        assert_eq!(o.first_kept(), 41);
        let after = o.after(40).expect("kept");
        assert_eq!(
            after.iter().map(|f| &*f.1).collect::<Vec<_>>(),
            [r#"{"seq":41,"type":"a"}"#, r#"{"seq":42,"type":"b"}"#]
        );
        assert_eq!(o.push(&b(r#"{"type":"c"}"#)).0, 43);
        o.shift(-42);
        assert_eq!(
            o.after(0).expect("kept").iter().map(|f| f.0).collect::<Vec<_>>(),
            [1],
            "frames below 1 are dropped"
        );
        assert_eq!(o.next_seq, 2);
    }
}
