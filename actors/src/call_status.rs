//! The call status machine of a room (seed 003): not_started → waiting → active → ended.
//!
//! A room holds one call at a time. The first participant to join opens a call in
//! `waiting`; a second participant makes it `active`; it ends when someone ends it
//! explicitly or when the last participant leaves. The next join after that opens a new
//! call. The room decides the transitions with [`CallStatus::on_join`], [`CallStatus::on_leave`] and
//! [`CallStatus::on_end`]; the store persists each one in the same transaction as the
//! change that caused it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Status of the current call of a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// No call has started in this room (or none since the last one ended and was archived).
    NotStarted,
    /// One participant is present and waits for the others.
    Waiting,
    /// Two or more participants have met.
    Active,
    /// The call is over.
    Ended,
}

/// What a transition does to the call sessions table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallTransition {
    /// A new call session starts (row inserted, `session.created` event).
    Open(CallStatus),
    /// The current call changes status (row updated).
    Change(CallStatus),
    /// The current call ends (row closed, `session.closed` event).
    Close,
}

impl CallStatus {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::NotStarted => "not_started",
            CallStatus::Waiting => "waiting",
            CallStatus::Active => "active",
            CallStatus::Ended => "ended",
        }
    }

    /// Parses the database spelling; unknown values read as `ended`, the safe reading
    /// for a call nobody can be in.
    pub fn parse(s: &str) -> CallStatus {
        match s {
            "not_started" => CallStatus::NotStarted,
            "waiting" => CallStatus::Waiting,
            "active" => CallStatus::Active,
            _ => CallStatus::Ended,
        }
    }

    /// Whether a call is in progress (somebody may be in it).
    pub fn is_open(self) -> bool {
        matches!(self, CallStatus::Waiting | CallStatus::Active)
    }

    /// The transition, if any, when a join makes `present` participants.
    pub fn on_join(self, present: usize) -> Option<CallTransition> {
        match (self, present) {
            (_, 0) => None,
            (CallStatus::NotStarted | CallStatus::Ended, 1) => Some(CallTransition::Open(CallStatus::Waiting)),
            (CallStatus::NotStarted | CallStatus::Ended, _) => Some(CallTransition::Open(CallStatus::Active)),
            (CallStatus::Waiting, n) if n >= 2 => Some(CallTransition::Change(CallStatus::Active)),
            (CallStatus::Waiting | CallStatus::Active, _) => None,
        }
    }

    /// The transition, if any, when a leave leaves `remaining` participants. Leaves never
    /// open a call, and an active call stays active while one participant waits for the
    /// other to come back: a dropped connection must not end a consultation.
    pub fn on_leave(self, remaining: usize) -> Option<CallTransition> {
        (self.is_open() && remaining == 0).then_some(CallTransition::Close)
    }

    /// The transition when a participant ends the call explicitly.
    pub fn on_end(self) -> Option<CallTransition> {
        self.is_open().then_some(CallTransition::Close)
    }

    /// The status after applying `t`.
    pub fn apply(self, t: CallTransition) -> CallStatus {
        match t {
            CallTransition::Open(s) | CallTransition::Change(s) => s,
            CallTransition::Close => CallStatus::Ended,
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::CallStatus::*;
    use super::CallTransition::*;
    use super::*;

    #[test]
    fn a_call_goes_through_its_states() {
        assert_eq!(NotStarted.on_join(1), Some(Open(Waiting)));
        assert_eq!(Waiting.on_join(2), Some(Change(Active)));
        assert_eq!(Active.on_join(3), None);
        assert_eq!(Active.on_leave(1), None);
        assert_eq!(Active.on_leave(0), Some(Close));
        assert_eq!(Ended.on_join(1), Some(Open(Waiting)));
        assert_eq!(Ended.on_join(2), Some(Open(Active)));
        assert_eq!(Waiting.on_leave(0), Some(Close));
        // After an explicit end, people leaving do not start a new call.
        assert_eq!(Ended.on_leave(1), None);
        assert_eq!(Ended.on_leave(0), None);
    }

    #[test]
    fn ending_works_only_on_open_calls() {
        assert_eq!(Active.on_end(), Some(Close));
        assert_eq!(Waiting.on_end(), Some(Close));
        assert_eq!(Ended.on_end(), None);
        assert_eq!(NotStarted.on_end(), None);
    }

    #[test]
    fn spelling_round_trips() {
        for s in [NotStarted, Waiting, Active, Ended] {
            assert_eq!(CallStatus::parse(s.as_str()), s);
        }
        assert_eq!(CallStatus::parse("garbage"), Ended);
    }
}
