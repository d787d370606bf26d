ALTER TABLE classes RENAME COLUMN room_code TO room;
