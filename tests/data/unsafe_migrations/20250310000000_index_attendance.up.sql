-- no-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS attendance_status_idx ON attendance (status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS attendance_note_idx ON attendance (note);
