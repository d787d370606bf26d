-- Add grades: one score (0..100) per student, subject, academic year and term.

CREATE TABLE grades (
    id            uuid         PRIMARY KEY DEFAULT uuid_generate_v4(),
    student_id    uuid         NOT NULL REFERENCES students (id) ON DELETE CASCADE,
    class_id      uuid         REFERENCES classes (id) ON DELETE SET NULL,
    subject       text         NOT NULL,
    academic_year text         NOT NULL CHECK (academic_year ~ '^[0-9]{4}-[0-9]{4}$'),
    term          text         NOT NULL,
    score         numeric(5,2) NOT NULL CHECK (score BETWEEN 0 AND 100),
    max_score     numeric(5,2) NOT NULL DEFAULT 100 CHECK (max_score > 0 AND max_score <= 100),
    graded_by     uuid         REFERENCES teachers (id) ON DELETE SET NULL,
    graded_at     timestamptz  NOT NULL DEFAULT now(),
    comment       text,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now(),
    CHECK (score <= max_score),
    UNIQUE (student_id, subject, academic_year, term)
);

-- student_id is covered by the unique (student_id, subject, academic_year, term) index above.
CREATE INDEX grades_class_id_idx ON grades (class_id);
CREATE INDEX grades_graded_by_idx ON grades (graded_by);
CREATE INDEX grades_academic_year_term_subject_idx ON grades (academic_year, term, subject);
