ALTER TABLE students DROP COLUMN nationality;
