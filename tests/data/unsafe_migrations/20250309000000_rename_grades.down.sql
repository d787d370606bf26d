ALTER TABLE marks RENAME TO grades;
