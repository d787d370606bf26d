-- Undo add_attendance: drop the attendance table.

DROP TABLE attendance;
