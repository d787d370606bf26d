-- Concurrently, but the file still runs in a transaction (no `-- no-transaction` first line).
CREATE INDEX CONCURRENTLY IF NOT EXISTS grades_subject_idx ON grades (subject);
