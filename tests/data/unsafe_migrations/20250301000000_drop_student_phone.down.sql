-- Undo drop_student_phone (the numbers themselves are gone).

ALTER TABLE students ADD COLUMN phone text;
