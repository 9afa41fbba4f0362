//! An appointment as it is kept and shown: who, when, its status (FHIR Appointment's
//! vocabulary) beside its call's status, and when each step happened.

use serde::Serialize;
use switchboard_actors::call_status::CallStatus;

/// Where an appointment stands, in FHIR Appointment's vocabulary
/// (<https://hl7.org/fhir/valueset-appointmentstatus.html>).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Booked by one side; the other has not confirmed yet.
    Proposed,
    /// Confirmed by both sides.
    Booked,
    /// A guest has joined the call.
    Arrived,
    /// The call took place and ended.
    Fulfilled,
    /// Called off before it took place (or while it went on).
    Cancelled,
    /// No guest came: the host ended the call before any did, or nobody joined by the no-show
    /// time.
    Noshow,
}

impl Status {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Proposed => "proposed",
            Status::Booked => "booked",
            Status::Arrived => "arrived",
            Status::Fulfilled => "fulfilled",
            Status::Cancelled => "cancelled",
            Status::Noshow => "noshow",
        }
    }

    /// Parses the database spelling; an unknown value reads as `cancelled`, the reading that
    /// lets nobody in.
    pub fn parse(s: &str) -> Status {
        match s {
            "proposed" => Status::Proposed,
            "booked" => Status::Booked,
            "arrived" => Status::Arrived,
            "fulfilled" => Status::Fulfilled,
            "noshow" => Status::Noshow,
            _ => Status::Cancelled,
        }
    }

    /// Whether the appointment is over (nothing can change it any more).
    pub fn is_final(self) -> bool {
        matches!(self, Status::Fulfilled | Status::Cancelled | Status::Noshow)
    }
}

/// One appointment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    /// Its id.
    pub id: String,
    /// Its room: nobody but the host and the guests may enter it.
    pub room_id: String,
    /// Who leads it (the doctor) and alone may start it.
    pub host_id: String,
    /// Who is invited (the patient).
    pub guest_ids: Vec<String>,
    /// When it is due, unix ms.
    #[serde(skip)]
    pub start_ms: i64,
    /// A call (true) or an appointment in person (false: no room may be joined).
    pub online: bool,
    /// What it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where it stands.
    pub status: Status,
    /// Where its call stands.
    pub call_status: CallStatus,
    /// Who booked it.
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    /// When the other side confirmed it, unix ms.
    pub confirmed_at: Option<i64>,
    /// When the host started the call, unix ms.
    pub started_at: Option<i64>,
    /// When the first guest joined, unix ms.
    pub arrived_at: Option<i64>,
    /// When it ended (fulfilled, cancelled or no-show), unix ms.
    pub ended_at: Option<i64>,
    /// Who ended or cancelled it (`system` for a no-show).
    pub ended_by: Option<String>,
    /// Bumped at every change: a change is written only over the version it was made from.
    pub version: i64,
}

impl Appointment {
    /// Whether `user` is its host.
    pub fn is_host(&self, user: &str) -> bool {
        self.host_id == user
    }

    /// Whether `user` is one of its guests.
    pub fn is_guest(&self, user: &str) -> bool {
        self.guest_ids.iter().any(|g| g == user)
    }

    /// Whether `user` takes part (host or guest).
    pub fn takes_part(&self, user: &str) -> bool {
        self.is_host(user) || self.is_guest(user)
    }

    /// Everyone who takes part, the host first.
    pub fn people(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.host_id.as_str()).chain(self.guest_ids.iter().map(String::as_str))
    }
}
