//! The `appointments` and `appointment_participants` tables. A change is written over the
//! version it was computed from (optimistic concurrency: another node's change in between
//! makes it fail, and the caller reads again), in one transaction with its
//! `appointment.updated` event and the notifications it sends.

use super::events::event;
use super::notifications::{self, NewNotification, Notification};
use super::{Store, col, db};
use crate::appointments::record::{Appointment, Status};
use crate::events::Event;
use sqlx::any::AnyRow;
use switchboard_actors::call_status::CallStatus;
use switchboard_actors::ports::StoreError;

const COLUMNS: &str = "id, room_id, host_id, guest_ids, start_at, online, description, status, call_status, \
     created_by, created_at, confirmed_at, started_at, arrived_at, ended_at, ended_by, version";

impl Store {
    /// Writes a new appointment (its room must exist), with its `booked` event and `notes`.
    pub async fn insert_appointment(
        &self,
        a: &Appointment,
        notes: &[NewNotification],
    ) -> Result<Vec<Notification>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let sql = format!(
            "INSERT INTO appointments ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        );
        sqlx::query(&sql)
            .bind(&a.id)
            .bind(&a.room_id)
            .bind(&a.host_id)
            .bind(serde_json::to_string(&a.guest_ids).unwrap_or_default())
            .bind(a.start_ms)
            .bind(i64::from(a.online))
            .bind(&a.description)
            .bind(a.status.as_str())
            .bind(a.call_status.as_str())
            .bind(&a.created_by)
            .bind(a.created_at)
            .bind(a.confirmed_at)
            .bind(a.started_at)
            .bind(a.arrived_at)
            .bind(a.ended_at)
            .bind(&a.ended_by)
            .bind(a.version)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for (user, role) in std::iter::once((&a.host_id, "host")).chain(a.guest_ids.iter().map(|g| (g, "guest"))) {
            sqlx::query("INSERT INTO appointment_participants (appointment_id, user_id, role) VALUES ($1, $2, $3)")
                .bind(&a.id)
                .bind(user)
                .bind(role)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        event(&mut tx, &a.room_id, &updated(a, "booked")).await?;
        let written = notifications::insert(&mut tx, &a.room_id, notes).await?;
        tx.commit().await.map_err(db)?;
        Ok(written)
    }

    /// Writes `a` (its status and times) over version `a.version - 1`, with its
    /// `appointment.updated` event (`change`) and `notes`. `None` when the stored version is
    /// no longer that one: someone else changed it first.
    pub async fn update_appointment(
        &self,
        a: &Appointment,
        change: &str,
        notes: &[NewNotification],
    ) -> Result<Option<Vec<Notification>>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query(
            "UPDATE appointments SET status = $1, call_status = $2, confirmed_at = $3, started_at = $4, \
             arrived_at = $5, ended_at = $6, ended_by = $7, version = $8 WHERE id = $9 AND version = $10",
        )
        .bind(a.status.as_str())
        .bind(a.call_status.as_str())
        .bind(a.confirmed_at)
        .bind(a.started_at)
        .bind(a.arrived_at)
        .bind(a.ended_at)
        .bind(&a.ended_by)
        .bind(a.version)
        .bind(&a.id)
        .bind(a.version - 1)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        event(&mut tx, &a.room_id, &updated(a, change)).await?;
        let written = notifications::insert(&mut tx, &a.room_id, notes).await?;
        tx.commit().await.map_err(db)?;
        Ok(Some(written))
    }

    /// An appointment by id.
    pub async fn appointment(&self, id: &str) -> Result<Option<Appointment>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM appointments WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(appointment).transpose()
    }

    /// The appointment whose room is `room`.
    pub async fn appointment_of_room(&self, room: &str) -> Result<Option<Appointment>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM appointments WHERE room_id = $1");
        let row = sqlx::query(&sql).bind(room).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(appointment).transpose()
    }

    /// The appointments `user` takes part in (all of them when `None`), soonest start first,
    /// at most `limit`.
    pub async fn appointments(&self, user: Option<&str>, limit: u32) -> Result<Vec<Appointment>, StoreError> {
        let cols = COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
        let rows = match user {
            Some(user) => {
                let sql = format!(
                    "SELECT {cols} FROM appointments a JOIN appointment_participants p ON p.appointment_id = a.id \
                     WHERE p.user_id = $1 ORDER BY a.start_at, a.id LIMIT $2"
                );
                sqlx::query(&sql).bind(user).bind(i64::from(limit)).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {cols} FROM appointments a ORDER BY a.start_at, a.id LIMIT $1");
                sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.pool).await
            }
        }
        .map_err(db)?;
        rows.iter().map(appointment).collect()
    }

    /// Appointments nobody arrived at that were due to start before `before` (unix ms) and
    /// are not over: the no-show candidates.
    pub async fn overdue_appointments(&self, before: i64, limit: u32) -> Result<Vec<Appointment>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM appointments WHERE status IN ('proposed', 'booked') AND start_at < $1 \
             ORDER BY start_at LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(before).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(appointment).collect()
    }
}

fn updated(a: &Appointment, change: &str) -> Event {
    Event::AppointmentUpdated {
        appointment_id: a.id.clone(),
        change: change.to_owned(),
        status: a.status.as_str().to_owned(),
        call_status: a.call_status.as_str().to_owned(),
    }
}

fn appointment(r: &AnyRow) -> Result<Appointment, StoreError> {
    let guests: String = col(r, 3)?;
    Ok(Appointment {
        id: col(r, 0)?,
        room_id: col(r, 1)?,
        host_id: col(r, 2)?,
        guest_ids: serde_json::from_str(&guests)
            .map_err(|e| StoreError::Corrupt(format!("appointments.guest_ids: {e}")))?,
        start_ms: col(r, 4)?,
        online: col::<i64>(r, 5)? != 0,
        description: col(r, 6)?,
        status: Status::parse(&col::<String>(r, 7)?),
        call_status: CallStatus::parse(&col::<String>(r, 8)?),
        created_by: col(r, 9)?,
        created_at: col(r, 10)?,
        confirmed_at: col(r, 11)?,
        started_at: col(r, 12)?,
        arrived_at: col(r, 13)?,
        ended_at: col(r, 14)?,
        ended_by: col(r, 15)?,
        version: col(r, 16)?,
    })
}
