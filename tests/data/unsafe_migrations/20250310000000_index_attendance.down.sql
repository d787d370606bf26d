-- no-transaction
DROP INDEX CONCURRENTLY IF EXISTS attendance_status_idx;
