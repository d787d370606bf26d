-- A school library: books that students can borrow.

CREATE TABLE library_books (
    id         uuid        PRIMARY KEY DEFAULT uuid_generate_v4(),
    title      text        NOT NULL,
    author     text,
    isbn       text,
    created_at timestamptz NOT NULL DEFAULT now()
);
