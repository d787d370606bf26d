ALTER TABLE teachers ADD COLUMN phone text;
