-- Files received from a polled server whose copy there could not be
-- deleted or moved yet: how many, and the latest error. Retried with
-- backoff; shown by `dropgate status`.
ALTER TABLE source_status ADD COLUMN cleanups_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE source_status ADD COLUMN cleanup_error TEXT;
