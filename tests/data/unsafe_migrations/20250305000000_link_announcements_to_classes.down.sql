ALTER TABLE announcements DROP COLUMN class_id;
