-- Announcements move to the messaging service.

DROP TABLE announcements;
