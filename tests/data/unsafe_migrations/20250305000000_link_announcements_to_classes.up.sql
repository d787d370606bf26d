-- Announcements can target one class.
ALTER TABLE announcements ADD COLUMN class_id uuid REFERENCES classes (id);
