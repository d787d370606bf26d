-- Initial school schema: admin_users, teachers, classes, students, announcements and the active_* views.

CREATE TABLE admin_users (
    id            uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
    email         text        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    full_name     text        NOT NULL,
    is_active     boolean     NOT NULL DEFAULT true,
    last_login_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE teachers (
    id         uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
    first_name text        NOT NULL,
    last_name  text        NOT NULL,
    email      text        NOT NULL UNIQUE,
    phone      text,
    subject    text,
    hire_date  date,
    is_active  boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX teachers_last_name_first_name_idx ON teachers (last_name, first_name);

CREATE TABLE classes (
    id                  uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
    name                text        NOT NULL,
    grade_level         integer     NOT NULL CHECK (grade_level BETWEEN 0 AND 13),
    academic_year       text        NOT NULL CHECK (academic_year ~ '^[0-9]{4}-[0-9]{4}$'),
    homeroom_teacher_id uuid        REFERENCES teachers (id) ON DELETE SET NULL,
    room                text,
    is_active           boolean     NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (academic_year, name)
);

CREATE INDEX classes_homeroom_teacher_id_idx ON classes (homeroom_teacher_id);
CREATE INDEX classes_academic_year_grade_level_idx ON classes (academic_year, grade_level);

CREATE TABLE students (
    id              uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
    student_code    text        NOT NULL UNIQUE,
    first_name      text        NOT NULL,
    last_name       text        NOT NULL,
    date_of_birth   date,
    email           text,
    phone           text,
    address         text,
    guardian_name   text,
    guardian_phone  text,
    guardian_email  text,
    class_id        uuid        REFERENCES classes (id) ON DELETE SET NULL,
    enrollment_date date        NOT NULL DEFAULT CURRENT_DATE,
    status          text        NOT NULL DEFAULT 'active'
                                CHECK (status IN ('active', 'inactive', 'graduated', 'transferred', 'withdrawn')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX students_class_id_idx ON students (class_id);
CREATE INDEX students_last_name_first_name_idx ON students (last_name, first_name);

CREATE TABLE announcements (
    id           uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
    title        text        NOT NULL,
    body         text        NOT NULL,
    author_id    uuid        REFERENCES admin_users (id) ON DELETE SET NULL,
    audience     text        NOT NULL DEFAULT 'all'
                             CHECK (audience IN ('all', 'students', 'teachers', 'parents', 'staff')),
    published_at timestamptz,
    is_pinned    boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX announcements_author_id_idx ON announcements (author_id);
CREATE INDEX announcements_published_at_idx ON announcements (published_at DESC);

CREATE VIEW active_students AS
    SELECT * FROM students WHERE status = 'active';

CREATE VIEW active_teachers AS
    SELECT * FROM teachers WHERE is_active;

CREATE VIEW active_classes AS
    SELECT * FROM classes WHERE is_active;
