-- A session of a token with the `hidden` grant: in the room, but not shown to the others.
ALTER TABLE sessions ADD COLUMN hidden BIGINT NOT NULL DEFAULT 0;
