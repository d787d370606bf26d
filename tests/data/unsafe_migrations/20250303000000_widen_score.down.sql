ALTER TABLE grades ALTER COLUMN score TYPE numeric(5,2);
