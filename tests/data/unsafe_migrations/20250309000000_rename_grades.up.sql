-- "Marks" is what the schools call them.
ALTER TABLE grades RENAME TO marks;
