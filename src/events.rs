//! What the outbox records: one typed payload per event kind, and the envelope an event
//! travels in on the bus (and, later, to webhooks). `docs/events.md` documents both; a new
//! kind is added here and nowhere else.

use serde::{Deserialize, Serialize};
use switchboard_actors::call_status::CallStatus;

/// An outbox event's kind and payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// A call of a room began (its first join, or a rejoin after it ended).
    #[serde(rename = "session.created", rename_all = "camelCase")]
    SessionCreated {
        /// The call.
        call_id: String,
        /// Its status when it began (`waiting` or `active`).
        status: CallStatus,
    },
    /// A call ended.
    #[serde(rename = "session.closed", rename_all = "camelCase")]
    SessionClosed {
        /// The call.
        call_id: String,
        /// Why (`ended_by_participant`, `empty`, `server_shutdown`, `reconciled`).
        reason: Option<String>,
    },
    /// Someone joined a room.
    #[serde(rename = "participant.joined", rename_all = "camelCase")]
    ParticipantJoined {
        /// Their session.
        peer_id: String,
        /// Who.
        user_id: String,
        /// Their display name.
        display_name: String,
    },
    /// Someone's session in a room closed.
    #[serde(rename = "participant.left", rename_all = "camelCase")]
    ParticipantLeft {
        /// Their session.
        peer_id: String,
        /// Who.
        user_id: String,
        /// Why (`left`, `disconnected`, `server_shutdown`, `node_restart`).
        reason: String,
    },
    /// A participant sent a snapshot; its job is queued.
    #[serde(rename = "snapshot.requested", rename_all = "camelCase")]
    SnapshotRequested {
        /// The job.
        job_id: String,
        /// What the snapshot shows (a peer id, a camera name...).
        subject: String,
        /// Who sent it.
        requested_by: String,
        /// The snapshot's content id.
        snapshot_cid: String,
    },
    /// A snapshot was compared with its baseline (or became it).
    #[serde(rename = "snapshot.scored", rename_all = "camelCase")]
    SnapshotScored {
        /// The job.
        job_id: String,
        /// Its subject.
        subject: String,
        /// `baseline`, `unchanged`, `changed` or `lighting`.
        verdict: String,
        /// Mean SSIM, 0..1.
        score: f64,
    },
    /// A signed report is ready.
    #[serde(rename = "report.created", rename_all = "camelCase")]
    ReportCreated {
        /// The report.
        report_id: String,
        /// Its job.
        job_id: String,
        /// Hex SHA-256 of its JCS bytes (what the room's next report chains to).
        hash: String,
    },
    /// An appointment changed (booked, confirmed, started, a guest arrived, ended, cancelled,
    /// no-show).
    #[serde(rename = "appointment.updated", rename_all = "camelCase")]
    AppointmentUpdated {
        /// The appointment.
        appointment_id: String,
        /// What happened: `booked`, `confirmed`, `started`, `arrived`, `ended`, `cancelled`,
        /// `noshow`.
        change: String,
        /// Its status after (FHIR Appointment's vocabulary).
        status: String,
        /// Its call's status after.
        call_status: String,
    },
    /// An operator acted on a room (audited in `audit_log` too).
    #[serde(rename = "admin.action", rename_all = "camelCase")]
    AdminAction {
        /// The audit entry.
        audit_id: String,
        /// Who (`api_key`, or the admin token's user).
        actor: String,
        /// What: `remove`, `mute`, `grants`, `end_call`, `close`.
        action: String,
        /// The session acted on, if any.
        target: Option<String>,
        /// The details (the grants given, what was muted, the outcome).
        detail: serde_json::Value,
    },
    /// A user was sent a notification.
    #[serde(rename = "notification.created", rename_all = "camelCase")]
    NotificationCreated {
        /// The notification.
        notification_id: String,
        /// Whom it is for.
        user_id: String,
        /// What about (`appointment.booked`, ...).
        kind: String,
        /// A line to show.
        title: String,
        /// Ids it refers to (`appointmentId`, `roomId`, ...).
        data: serde_json::Value,
    },
}

impl Event {
    /// Every kind.
    pub const KINDS: [&'static str; 10] = [
        "session.created",
        "session.closed",
        "participant.joined",
        "participant.left",
        "snapshot.requested",
        "snapshot.scored",
        "report.created",
        "appointment.updated",
        "notification.created",
        "admin.action",
    ];

    /// The kind, as in topics and the envelope's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SessionCreated { .. } => "session.created",
            Event::SessionClosed { .. } => "session.closed",
            Event::ParticipantJoined { .. } => "participant.joined",
            Event::ParticipantLeft { .. } => "participant.left",
            Event::SnapshotRequested { .. } => "snapshot.requested",
            Event::SnapshotScored { .. } => "snapshot.scored",
            Event::ReportCreated { .. } => "report.created",
            Event::AppointmentUpdated { .. } => "appointment.updated",
            Event::NotificationCreated { .. } => "notification.created",
            Event::AdminAction { .. } => "admin.action",
        }
    }

    /// The payload alone, as stored in `events.payload`.
    pub fn data(&self) -> serde_json::Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
            .unwrap_or_default()
    }
}

/// An event as it leaves the node: `{"id","type","timestamp","roomId","data"}`. `id` is the
/// idempotency key: a consumer that sees an id twice has seen the same event twice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The event's id (a UUIDv7: ordered by creation time).
    pub id: String,
    /// The kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the change happened, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// The room it happened in.
    pub room_id: String,
    /// The kind's payload.
    pub data: serde_json::Value,
}

impl Envelope {
    /// The envelope of a stored event created at `created_at` (unix ms).
    pub fn new(id: String, kind: String, room_id: String, created_at: i64, data: serde_json::Value) -> Envelope {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(created_at.max(0) as u64);
        let timestamp = humantime::format_rfc3339_millis(at).to_string();
        Envelope { id, kind, timestamp, room_id, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_documented_shape() {
        let left = Event::ParticipantLeft { peer_id: "p1".into(), user_id: "u1".into(), reason: "left".into() };
        assert_eq!(left.kind(), "participant.left");
        assert!(Event::KINDS.contains(&left.kind()));
        assert_eq!(left.data(), serde_json::json!({"peerId": "p1", "userId": "u1", "reason": "left"}));
        let created = Event::SessionCreated { call_id: "c1".into(), status: CallStatus::Waiting };
        assert_eq!(created.data(), serde_json::json!({"callId": "c1", "status": "waiting"}));
        let back: Event =
            serde_json::from_value(serde_json::json!({"type": "session.created", "data": created.data()})).unwrap();
        assert_eq!(back, created);
        let e = Envelope::new("id1".into(), "session.created".into(), "r1".into(), 1_764_547_200_123, created.data());
        assert_eq!(e.timestamp, "2025-12-01T00:00:00.123Z");
        let wire = serde_json::to_value(&e).unwrap();
        assert_eq!(wire["type"], "session.created");
        assert_eq!(wire["roomId"], "r1");
    }
}
