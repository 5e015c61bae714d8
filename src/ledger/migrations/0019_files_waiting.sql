-- Files a polled server held at its source's latest poll that were not
-- taken (still being written, over max_file_size, or refused), for `status`.
ALTER TABLE source_status ADD COLUMN files_waiting INTEGER NOT NULL DEFAULT 0;
