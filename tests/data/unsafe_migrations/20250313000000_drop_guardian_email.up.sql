-- lint:ignore drop-column reason: guardian emails moved to the guardians table; nothing reads them since v42
ALTER TABLE students DROP COLUMN guardian_email;
