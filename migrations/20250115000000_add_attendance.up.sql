-- Add daily attendance: one row per student per day with a present/absent/late/excused status.

CREATE TABLE attendance (
    id              uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
    student_id      uuid        NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    attendance_date date        NOT NULL DEFAULT CURRENT_DATE,
    status          text        NOT NULL DEFAULT 'present'
                                CHECK (status IN ('present', 'absent', 'late', 'excused')),
    class_id        uuid        REFERENCES classes (id) ON DELETE SET NULL,
    recorded_by     uuid        REFERENCES teachers (id) ON DELETE SET NULL,
    note            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (student_id, attendance_date)
);

-- student_id is covered by the unique (student_id, attendance_date) index above.
CREATE INDEX attendance_class_id_attendance_date_idx ON attendance (class_id, attendance_date);
CREATE INDEX attendance_recorded_by_idx ON attendance (recorded_by);
CREATE INDEX attendance_attendance_date_idx ON attendance (attendance_date);
