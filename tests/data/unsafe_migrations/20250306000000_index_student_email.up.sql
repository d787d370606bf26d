-- Look students up by email.
CREATE INDEX students_email_idx ON students (email);
