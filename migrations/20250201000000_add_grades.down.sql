-- Undo add_grades: drop the grades table.

DROP TABLE grades;
