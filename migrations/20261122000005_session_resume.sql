-- The secret that lets a session be resumed on a new connection; kept with the session so a
-- room that restarts or moves can still accept it.
ALTER TABLE sessions ADD COLUMN resume_token TEXT;
