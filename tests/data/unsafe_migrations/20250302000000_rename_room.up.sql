-- Rooms get codes instead of free text.
ALTER TABLE classes
    RENAME COLUMN room TO room_code;
