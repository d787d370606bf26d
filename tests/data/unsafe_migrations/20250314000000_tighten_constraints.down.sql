ALTER TABLE students ALTER COLUMN email DROP NOT NULL;
ALTER TABLE classes DROP CONSTRAINT classes_room_not_blank;
