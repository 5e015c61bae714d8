-- A small upload to the embedded SFTP server is made durable by the one
-- commit that records it `received`: its bytes are held here, in that same
-- transaction, until they are written out to the spool. The row goes in the
-- transaction that follows the spool copy's fsync; processing and
-- forwarding wait for it.
CREATE TABLE held_payloads (
    file_id INTEGER PRIMARY KEY REFERENCES files(id),
    body    BLOB NOT NULL
);
