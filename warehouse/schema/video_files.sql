-- Every name a video content was seen under (a video copied to two places has two rows).
CREATE TABLE video_files (
    video_id VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    abs_path VARCHAR NOT NULL,
    root VARCHAR,
    size_bytes BIGINT,
    mtime_ns BIGINT,
    first_seen_at TIMESTAMP,
    run_id VARCHAR,
    PRIMARY KEY (abs_path, video_id)
);
COMMENT ON TABLE video_files IS 'Every file name a video content was seen under.';
COMMENT ON COLUMN video_files.video_id IS 'the content (videos.video_id)';
COMMENT ON COLUMN video_files.path IS 'the path as given: relative to the ingest root, or as written in the manifest';
COMMENT ON COLUMN video_files.abs_path IS 'absolute, resolved path of the file when it was seen';
COMMENT ON COLUMN video_files.root IS 'absolute ingest root (folder, or the folder of the manifest)';
COMMENT ON COLUMN video_files.size_bytes IS 'file size in bytes when seen';
COMMENT ON COLUMN video_files.mtime_ns IS 'modification time (ns since epoch) when seen; with size it lets re-runs skip unchanged files without re-hashing';
COMMENT ON COLUMN video_files.first_seen_at IS 'UTC time this name was first recorded';
COMMENT ON COLUMN video_files.run_id IS 'ingest run that recorded the name';
