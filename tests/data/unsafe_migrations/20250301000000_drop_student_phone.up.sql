-- Students' phone numbers move to the guardians table.

ALTER TABLE students DROP COLUMN phone;
