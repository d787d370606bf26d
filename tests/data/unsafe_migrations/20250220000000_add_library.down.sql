-- Undo add_library.

DROP TABLE library_books;
