-- Every rejected input: one row per bad file (or per bad manifest row), with a stable code.
CREATE TABLE ingest_errors (
    path VARCHAR NOT NULL,
    abs_path VARCHAR,
    sha256 VARCHAR,
    stage VARCHAR NOT NULL,
    code VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    "at" TIMESTAMP NOT NULL,
    root VARCHAR,
    size_bytes BIGINT,
    mtime_ns BIGINT,
    run_id VARCHAR,
    PRIMARY KEY (path, root)
);
COMMENT ON TABLE ingest_errors IS 'Rejected inputs: exactly one row per bad file or bad manifest row.';
COMMENT ON COLUMN ingest_errors.path IS 'the path as given (manifest rows: manifest path + ":" + line number; speech to text: the video path + "#asr")';
COMMENT ON COLUMN ingest_errors.abs_path IS 'absolute path of the file (NULL when it does not resolve)';
COMMENT ON COLUMN ingest_errors.sha256 IS 'sha256 of the bytes where the file was readable, else NULL';
COMMENT ON COLUMN ingest_errors.stage IS 'scan, hash, probe, validate, text, manifest or asr (speech to text; the video itself is ingested)';
COMMENT ON COLUMN ingest_errors.code IS 'stable error code (empty_file, not_a_video, container_unreadable, ...: see README)';
COMMENT ON COLUMN ingest_errors.message IS 'human-readable reason, naming the bad value';
COMMENT ON COLUMN ingest_errors."at" IS 'UTC time of the rejection (quote it in SQL: "at" is a keyword)';
COMMENT ON COLUMN ingest_errors.root IS 'absolute ingest root';
COMMENT ON COLUMN ingest_errors.size_bytes IS 'file size when rejected (with mtime_ns: unchanged files are not retried)';
COMMENT ON COLUMN ingest_errors.mtime_ns IS 'modification time when rejected (ns since epoch)';
COMMENT ON COLUMN ingest_errors.run_id IS 'ingest run that rejected it';
