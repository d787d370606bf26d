ALTER TABLE students ADD COLUMN guardian_email text;
