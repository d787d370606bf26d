DROP INDEX grades_subject_idx;
