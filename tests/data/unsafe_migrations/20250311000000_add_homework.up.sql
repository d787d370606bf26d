-- Homework per class. (Its .down.sql was never written.)
CREATE TABLE homework (
    id       uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    class_id uuid NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    title    text NOT NULL,
    due_on   date NOT NULL
);
