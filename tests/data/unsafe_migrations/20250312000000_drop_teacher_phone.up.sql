-- lint:ignore drop-column
ALTER TABLE teachers DROP COLUMN phone;
