DROP INDEX students_email_idx;
