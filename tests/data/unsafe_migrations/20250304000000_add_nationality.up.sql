-- Every student has a nationality.
ALTER TABLE students ADD COLUMN nationality text NOT NULL;
