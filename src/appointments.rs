//! Appointments: a call booked between a host (a doctor) and guests (a patient) at a start
//! time, in a room nobody else may enter. Its status follows FHIR Appointment (proposed →
//! booked → arrived → fulfilled, or cancelled, or noshow) beside its call's (not_started →
//! waiting → active → ended):
//!
//! - booking makes it `proposed` and tells the others; the other side's `confirm` makes it
//!   `booked`;
//! - from `[appointments] join_window` before its start the host may `start` the call
//!   (`waiting`; the guests are told) and then everyone taking part may join its room;
//! - the first guest in makes it `arrived` and the call `active`;
//! - `end` (either side) makes it `fulfilled` (`noshow` if no guest ever came), `cancel` makes
//!   it `cancelled`; both end the room's call wherever the room runs;
//! - nobody arrived `[appointments] noshow_after` past its start: `noshow` (the sweep).
//!
//! Every change is written over the version it was computed from, with its event and
//! notifications in the same transaction, then the notifications are pushed.

use crate::app::App;
use crate::notifications;
use crate::store::notifications::NewNotification;
use record::{Appointment, Status};
use serde_json::json;
use switchboard_actors::call_status::CallStatus;
use switchboard_actors::ids::random_id;
use switchboard_actors::ports::{RoomPolicy, StoreError, now_ms};
use switchboard_actors::room::admin::AdminAction;
use switchboard_actors::{ErrorCode, RoomId, UserId};

pub mod record;

/// The prefix of every appointment's room id: a join of such a room is checked against its
/// appointment.
pub const ROOM_PREFIX: &str = "appt-";

/// Most guests one appointment can have.
pub const MAX_GUESTS: usize = 8;

/// Who asks.
#[derive(Clone, Debug)]
pub enum Caller {
    /// A user, by their token.
    User(String),
    /// The operator: the API key (`None`), or a `roomAdmin` token's user. Sees, books, ends
    /// and cancels every appointment; starts only those it hosts, and joins none it does not
    /// take part in.
    Operator(Option<String>),
}

impl Caller {
    fn name(&self) -> &str {
        match self {
            Caller::User(u) | Caller::Operator(Some(u)) => u,
            Caller::Operator(None) => "operator",
        }
    }

    fn sees(&self, a: &Appointment) -> bool {
        match self {
            Caller::User(u) => a.takes_part(u),
            Caller::Operator(_) => true,
        }
    }

    /// The user behind the call, if any.
    fn user(&self) -> Option<&str> {
        match self {
            Caller::User(u) | Caller::Operator(Some(u)) => Some(u),
            Caller::Operator(None) => None,
        }
    }
}

/// Why a request about an appointment was refused: an HTTP status's meaning, a code and a
/// sentence.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such appointment, or not one the caller takes part in (404: an outsider learns
    /// nothing, not even that it exists).
    NotFound,
    /// The caller takes part but may not do this (403).
    Forbidden(String),
    /// Not in its current state (409): the code says which.
    Conflict(&'static str, String),
    /// The request is malformed (400).
    Invalid(String),
    /// The database or the room's node did not answer (503).
    Unavailable(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "appointment store failed");
        Refusal::Unavailable("the database is unreachable; try again".into())
    }
}

/// What a booking asks for.
#[derive(Clone, Debug)]
pub struct Booking {
    /// The host.
    pub host_id: String,
    /// The guests.
    pub guest_ids: Vec<String>,
    /// When it is due, unix ms.
    pub start_ms: i64,
    /// A call (else in person: no room to join).
    pub online: bool,
    /// What it is about.
    pub description: Option<String>,
}

/// Books an appointment: `proposed`, its room made (the host and guests its only invitees),
/// the others told.
pub async fn book(app: &App, by: &Caller, b: Booking) -> Result<Appointment, Refusal> {
    validate(&b)?;
    if let Caller::User(u) = by
        && u != &b.host_id
        && !b.guest_ids.contains(u)
    {
        return Err(Refusal::Forbidden("you can book only an appointment you take part in".into()));
    }
    let id = random_id();
    let room_id = format!("{ROOM_PREFIX}{id}");
    let invitees: Vec<UserId> =
        std::iter::once(&b.host_id).chain(b.guest_ids.iter()).map(|u| UserId::new(u.as_str())).collect();
    let policy = RoomPolicy { max_participants: invitees.len() as u32, invitees: Some(invitees) };
    app.store.create_room(&room_id, &policy, "appointment").await?;
    let now = now_ms();
    let a = Appointment {
        id,
        room_id,
        host_id: b.host_id,
        guest_ids: b.guest_ids,
        start_ms: b.start_ms,
        online: b.online,
        description: b.description,
        status: Status::Proposed,
        call_status: CallStatus::NotStarted,
        created_by: by.name().to_owned(),
        created_at: now,
        confirmed_at: None,
        started_at: None,
        arrived_at: None,
        ended_at: None,
        ended_by: None,
        version: 1,
    };
    let when = rfc3339(a.start_ms);
    let notes =
        tell(&a, others(&a, by), "appointment.booked", &format!("{} booked an appointment for {when}", by.name()));
    let written = app.store.insert_appointment(&a, &notes).await?;
    notifications::push(app, &written);
    metrics::counter!("switchboard_appointments_total", "change" => "booked").increment(1);
    Ok(a)
}

fn validate(b: &Booking) -> Result<(), Refusal> {
    let user_ok = |u: &str| !u.is_empty() && u.len() <= 128;
    if !user_ok(&b.host_id) {
        return Err(Refusal::Invalid("hostId must be 1 to 128 characters".into()));
    }
    if b.guest_ids.is_empty() || b.guest_ids.len() > MAX_GUESTS {
        return Err(Refusal::Invalid(format!("guestIds must name 1 to {MAX_GUESTS} guests")));
    }
    if !b.guest_ids.iter().all(|g| user_ok(g)) {
        return Err(Refusal::Invalid("every guest id must be 1 to 128 characters".into()));
    }
    let mut all: Vec<&str> = b.guest_ids.iter().map(String::as_str).collect();
    all.push(&b.host_id);
    all.sort_unstable();
    if all.windows(2).any(|w| w[0] == w[1]) {
        return Err(Refusal::Invalid("the host and the guests must be different people".into()));
    }
    if b.description.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(Refusal::Invalid("description must be at most 500 characters".into()));
    }
    Ok(())
}

/// An appointment the caller may see.
pub async fn get(app: &App, id: &str, by: &Caller) -> Result<Appointment, Refusal> {
    match app.store.appointment(id).await? {
        Some(a) if by.sees(&a) => Ok(a),
        _ => Err(Refusal::NotFound),
    }
}

/// The other side confirms: `booked`.
pub async fn confirm(app: &App, id: &str, by: &Caller) -> Result<Appointment, Refusal> {
    change(app, id, by, |a, now| {
        if a.status.is_final() {
            return Err(closed(a));
        }
        if a.status != Status::Proposed {
            // Confirmed already (or under way): nothing to do.
            return Ok(None);
        }
        if by.user() == Some(a.created_by.as_str()) {
            return Err(Refusal::Forbidden("the other side confirms what you booked".into()));
        }
        a.status = Status::Booked;
        a.confirmed_at = Some(now);
        let title = format!("{} confirmed the appointment of {}", by.name(), rfc3339(a.start_ms));
        Ok(Some(("confirmed", tell(a, others(a, by), "appointment.confirmed", &title))))
    })
    .await
}

/// The host starts the call (`waiting`), from the join window on; the guests are told.
pub async fn start(app: &App, id: &str, by: &Caller) -> Result<Appointment, Refusal> {
    let window = app.config.appointments.join_window.as_millis() as i64;
    change(app, id, by, |a, now| {
        if !by.user().is_some_and(|u| a.is_host(u)) {
            return Err(Refusal::Forbidden("only the host starts the call".into()));
        }
        if a.status.is_final() {
            return Err(closed(a));
        }
        if !a.online {
            return Err(Refusal::Conflict("not_online", "this appointment takes place in person".into()));
        }
        if a.started_at.is_some() {
            return Ok(None);
        }
        let opens = a.start_ms - window;
        if now < opens {
            let message = format!("the call can be started from {} on", rfc3339(opens));
            return Err(Refusal::Conflict("too_early", message));
        }
        a.started_at = Some(now);
        a.call_status = CallStatus::Waiting;
        let guests = a.guest_ids.clone();
        let title = format!("{} started the call; join now", a.host_id);
        Ok(Some(("started", tell(a, guests, "appointment.started", &title))))
    })
    .await
}

/// Either side ends the call: `fulfilled` (`noshow` if no guest came), the room's call ended.
pub async fn end(app: &App, id: &str, by: &Caller) -> Result<Appointment, Refusal> {
    let a = change(app, id, by, |a, now| {
        if a.status.is_final() {
            return Err(closed(a));
        }
        if a.started_at.is_none() {
            return Err(Refusal::Conflict(
                "not_started",
                "the call has not started; cancel the appointment instead".into(),
            ));
        }
        a.status = if a.arrived_at.is_some() { Status::Fulfilled } else { Status::Noshow };
        finish(a, now, by.name());
        Ok(Some(("ended", tell(a, others(a, by), "appointment.ended", &format!("{} ended the call", by.name())))))
    })
    .await?;
    end_room_call(app, &a, "appointment_ended").await;
    Ok(a)
}

/// Either side calls it off: `cancelled`, the room's call ended if it was on.
pub async fn cancel(app: &App, id: &str, by: &Caller) -> Result<Appointment, Refusal> {
    let a = change(app, id, by, |a, now| {
        if a.status.is_final() {
            return Err(closed(a));
        }
        a.status = Status::Cancelled;
        finish(a, now, by.name());
        let title = format!("{} cancelled the appointment of {}", by.name(), rfc3339(a.start_ms));
        Ok(Some(("cancelled", tell(a, others(a, by), "appointment.cancelled", &title))))
    })
    .await?;
    end_room_call(app, &a, "appointment_cancelled").await;
    Ok(a)
}

fn finish(a: &mut Appointment, now: i64, by: &str) {
    if a.call_status.is_open() {
        a.call_status = CallStatus::Ended;
    }
    a.ended_at = Some(now);
    a.ended_by = Some(by.to_owned());
}

fn closed(a: &Appointment) -> Refusal {
    Refusal::Conflict("appointment_closed", format!("the appointment is over ({})", a.status.as_str()))
}

/// Marks every appointment nobody arrived at by `noshow_after` past its start a no-show
/// (everyone told, the room's call ended). Any node may run it: each appointment changes once.
pub async fn sweep(app: &App) -> Result<usize, StoreError> {
    let after = app.config.appointments.noshow_after.as_millis() as i64;
    let due = app.store.overdue_appointments(now_ms() - after, 100).await?;
    let mut marked = 0;
    for a in due {
        let moved = change(app, &a.id, &Caller::Operator(None), |a, now| {
            if a.status.is_final() || a.arrived_at.is_some() || now < a.start_ms + after {
                return Ok(None);
            }
            a.status = Status::Noshow;
            finish(a, now, "system");
            let everyone: Vec<String> = a.people().map(str::to_owned).collect();
            Ok(Some((
                "noshow",
                tell(a, everyone, "appointment.noshow", "Nobody joined the appointment in time: a no-show"),
            )))
        })
        .await;
        match moved {
            Ok(a) if a.status == Status::Noshow && a.ended_by.as_deref() == Some("system") => {
                marked += 1;
                end_room_call(app, &a, "noshow").await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(appointment = %a.id, error = ?e, "no-show not recorded"),
        }
    }
    Ok(marked)
}

/// Runs [`sweep`] every `[appointments] sweep_interval` until the node stops.
pub fn spawn_sweeper(app: std::sync::Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(app.config.appointments.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !app.is_shutting_down() {
            tick.tick().await;
            if let Err(e) = sweep(&app).await {
                tracing::debug!(error = %e, "appointment sweep failed; next time");
            }
        }
    })
}

/// Whether `user` may join room `room` now: a room that is not an appointment's always; an
/// appointment's only for those who take part, once the host has started it and until it is
/// over.
pub async fn may_join(app: &App, room: &str, user: &str) -> Result<(), (ErrorCode, String)> {
    if !room.starts_with(ROOM_PREFIX) {
        return Ok(());
    }
    let a = match app.store.appointment_of_room(room).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err((ErrorCode::RoomForbidden, "no appointment has this room".into())),
        Err(_) => return Err((ErrorCode::Unavailable, "the appointment could not be read; try again".into())),
    };
    if !a.takes_part(user) {
        return Err((ErrorCode::RoomForbidden, "only the appointment's host and guests may join".into()));
    }
    if a.status.is_final() {
        return Err((ErrorCode::NotOpen, format!("the appointment is over ({})", a.status.as_str())));
    }
    if a.started_at.is_none() {
        return Err((ErrorCode::NotOpen, "the host has not started the call yet; you will be notified".into()));
    }
    Ok(())
}

/// `user` joined an appointment's room: the first guest in makes it `arrived` and the call
/// `active`.
pub async fn joined(app: &App, room: &str, user: &str) {
    let Ok(Some(a)) = app.store.appointment_of_room(room).await else { return };
    if !a.is_guest(user) || a.arrived_at.is_some() {
        return;
    }
    let outcome = change(app, &a.id, &Caller::User(user.to_owned()), |a, now| {
        if a.status.is_final() || a.arrived_at.is_some() {
            return Ok(None);
        }
        a.status = Status::Arrived;
        a.arrived_at = Some(now);
        a.call_status = CallStatus::Active;
        Ok(Some(("arrived", Vec::new())))
    })
    .await;
    if let Err(e) = outcome {
        tracing::warn!(%room, error = ?e, "arrival not recorded");
    }
}

/// `user`'s connection in an appointment's room dropped (it did not leave): the others are
/// told, while the appointment is on.
pub async fn dropped(app: &App, room: &str, user: &str) {
    let Ok(Some(a)) = app.store.appointment_of_room(room).await else { return };
    if a.status.is_final() || a.started_at.is_none() || !a.takes_part(user) {
        return;
    }
    let outcome = change(app, &a.id, &Caller::User(user.to_owned()), |a, _| {
        if a.status.is_final() {
            return Ok(None);
        }
        let to = others(a, &Caller::User(user.to_owned()));
        let title = format!("{user} left the call unexpectedly; they may come back");
        Ok(Some(("peer_left", tell(a, to, "appointment.peer_left", &title))))
    })
    .await;
    if let Err(e) = outcome {
        tracing::warn!(%room, error = ?e, "unexpected leave not notified");
    }
}

/// Reads, changes and writes an appointment over the version read, again when another change
/// came first. `f` answers `None` for "nothing to change" (the call is idempotent), or the
/// change's name and the notifications it sends.
async fn change<F>(app: &App, id: &str, by: &Caller, f: F) -> Result<Appointment, Refusal>
where
    F: Fn(&mut Appointment, i64) -> Result<Option<(&'static str, Vec<NewNotification>)>, Refusal>,
{
    for _ in 0..5 {
        let mut a = get(app, id, by).await?;
        let Some((what, notes)) = f(&mut a, now_ms())? else { return Ok(a) };
        a.version += 1;
        if let Some(written) = app.store.update_appointment(&a, what, &notes).await? {
            notifications::push(app, &written);
            metrics::counter!("switchboard_appointments_total", "change" => what).increment(1);
            return Ok(a);
        }
    }
    Err(Refusal::Unavailable("the appointment is changing; try again".into()))
}

/// Ends the room's call wherever the room runs (a room nobody is in has none to end).
async fn end_room_call(app: &App, a: &Appointment, reason: &str) {
    let action = AdminAction::EndCall { reason: reason.to_owned() };
    if let Err((code, message)) = crate::routing::admin(app, &RoomId::new(&a.room_id), action).await {
        tracing::warn!(room_id = %a.room_id, code = code.as_str(), %message, "the appointment's call was not ended in its room");
    }
}

/// Everyone taking part but the caller.
fn others(a: &Appointment, by: &Caller) -> Vec<String> {
    a.people().filter(|p| by.user() != Some(*p)).map(str::to_owned).collect()
}

fn tell(a: &Appointment, to: Vec<String>, kind: &str, title: &str) -> Vec<NewNotification> {
    to.into_iter()
        .map(|user_id| NewNotification {
            user_id,
            kind: kind.to_owned(),
            title: title.to_owned(),
            data: json!({
                "appointmentId": a.id,
                "roomId": a.room_id,
                "status": a.status.as_str(),
                "callStatus": a.call_status.as_str(),
            }),
        })
        .collect()
}

/// Unix ms as RFC 3339 in UTC.
pub fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Parses an RFC 3339 time (`Z` or a `±hh:mm` offset) into unix ms.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let text = text.trim();
    let (utc, offset_minutes) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((head, tail)) if (tail.starts_with('+') || tail.starts_with('-')) && tail.as_bytes()[3] == b':' => {
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            let h: i64 = tail[1..3].parse().ok()?;
            let m: i64 = tail[4..6].parse().ok()?;
            (format!("{head}Z"), sign * (h * 60 + m))
        }
        _ => (text.to_owned(), 0),
    };
    let at = humantime::parse_rfc3339(&utc).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(ms - offset_minutes * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_with_offsets_read_as_utc() {
        let z = parse_rfc3339("2026-12-01T10:00:00Z").expect("utc");
        assert_eq!(parse_rfc3339("2026-12-01T11:30:00+01:30"), Some(z));
        assert_eq!(parse_rfc3339("2026-12-01T05:00:00-05:00"), Some(z));
        assert_eq!(rfc3339(z), "2026-12-01T10:00:00Z");
        assert_eq!(parse_rfc3339("tomorrow"), None);
        assert_eq!(parse_rfc3339("2026-13-01T10:00:00Z"), None);
    }

    #[test]
    fn a_booking_needs_distinct_people() {
        let b = |host: &str, guests: &[&str]| Booking {
            host_id: host.into(),
            guest_ids: guests.iter().map(|g| (*g).to_owned()).collect(),
            start_ms: 0,
            online: true,
            description: None,
        };
        assert!(validate(&b("dr", &["pat"])).is_ok());
        assert!(validate(&b("dr", &[])).is_err());
        assert!(validate(&b("dr", &["dr"])).is_err());
        assert!(validate(&b("dr", &["pat", "pat"])).is_err());
        assert!(validate(&b("", &["pat"])).is_err());
    }
}
