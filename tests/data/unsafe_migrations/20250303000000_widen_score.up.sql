-- Scores with three digits before the point.
ALTER TABLE grades ALTER COLUMN score TYPE numeric(6,2);
