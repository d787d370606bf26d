-- Undo the initial school schema: drop the active_* views, then the tables in reverse dependency order.

DROP VIEW active_classes;
DROP VIEW active_teachers;
DROP VIEW active_students;

DROP TABLE announcements;
DROP TABLE students;
DROP TABLE classes;
DROP TABLE teachers;
DROP TABLE admin_users;
