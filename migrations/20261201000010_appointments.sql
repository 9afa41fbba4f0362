-- Appointments: a call booked between a host and guests at a start time, in a room of its
-- own (`room_id`, invitees the host and the guests). `status` follows FHIR Appointment's
-- vocabulary (proposed, booked, arrived, fulfilled, cancelled, noshow); `call_status` is the
-- call's (not_started, waiting, active, ended). Every change bumps `version`, and a change is
-- written only over the version it was made from, so two nodes cannot both move one
-- appointment. Times are unix milliseconds.

CREATE TABLE appointments (
    id           TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL UNIQUE,
    host_id      TEXT NOT NULL,
    guest_ids    TEXT NOT NULL,          -- JSON array
    start_at     BIGINT NOT NULL,
    online       BIGINT NOT NULL,
    description  TEXT,
    status       TEXT NOT NULL,
    call_status  TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    confirmed_at BIGINT,
    started_at   BIGINT,
    arrived_at   BIGINT,
    ended_at     BIGINT,
    ended_by     TEXT,
    version      BIGINT NOT NULL
);

CREATE INDEX appointments_due ON appointments (status, start_at);

-- Who takes part in an appointment, to find a user's appointments.
CREATE TABLE appointment_participants (
    appointment_id TEXT NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL,
    role           TEXT NOT NULL,        -- host, guest
    PRIMARY KEY (appointment_id, user_id)
);

CREATE INDEX appointment_participants_user ON appointment_participants (user_id);

-- What a user is told about (an appointment booked, a call started...): pushed to the user's
-- open connections when written, kept until read and after.
CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,         -- UUIDv7: ordered by creation
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    data       TEXT NOT NULL,            -- JSON object
    created_at BIGINT NOT NULL,
    read_at    BIGINT
);

CREATE INDEX notifications_user ON notifications (user_id, read_at, id);
