CREATE TABLE announcements (
    id           uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
    title        text        NOT NULL,
    body         text        NOT NULL,
    author_id    uuid        REFERENCES admin_users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
