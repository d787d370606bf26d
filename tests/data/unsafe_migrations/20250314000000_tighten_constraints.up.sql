-- Squawk's rules catch lock hazards ours do not know.
ALTER TABLE classes ADD CONSTRAINT classes_room_not_blank CHECK (room <> '');
ALTER TABLE students ALTER COLUMN email SET NOT NULL;
