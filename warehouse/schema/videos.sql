-- One row per distinct video content. Identity is the sha256 of the file's bytes, so the same
-- video under two names is one row here and two rows in video_files.
CREATE TABLE videos (
    video_id VARCHAR NOT NULL,
    duration_s DOUBLE,
    probed_duration_s DOUBLE,
    fps DOUBLE,
    vfr BOOLEAN,
    width INTEGER,
    height INTEGER,
    codec VARCHAR,
    pix_fmt VARCHAR,
    bit_depth INTEGER,
    rotation INTEGER,
    has_audio BOOLEAN,
    audio_codec VARCHAR,
    n_subtitle_streams INTEGER,
    format_name VARCHAR,
    size_bytes BIGINT,
    status VARCHAR,
    status_detail VARCHAR,
    first_path VARCHAR,
    probe_json VARCHAR,
    ingested_at TIMESTAMP,
    run_id VARCHAR,
    PRIMARY KEY (video_id)
);
COMMENT ON TABLE videos IS 'One row per distinct video content (sha256 of the bytes).';
COMMENT ON COLUMN videos.video_id IS 'sha256 of the file bytes, lowercase hex (64 chars)';
COMMENT ON COLUMN videos.duration_s IS 'usable duration in seconds: what decoded during validation (less than probed_duration_s when status = partial)';
COMMENT ON COLUMN videos.probed_duration_s IS 'duration the container claims, from ffprobe';
COMMENT ON COLUMN videos.fps IS 'average frame rate of the video stream (frames per second)';
COMMENT ON COLUMN videos.vfr IS 'true when the stream has a variable frame rate (frames are sampled by timestamp)';
COMMENT ON COLUMN videos.width IS 'upright display width in pixels (after applying rotation)';
COMMENT ON COLUMN videos.height IS 'upright display height in pixels (after applying rotation)';
COMMENT ON COLUMN videos.codec IS 'video codec name as ffprobe reports it (h264, hevc, vp9, ...)';
COMMENT ON COLUMN videos.pix_fmt IS 'pixel format of the video stream (decoded frames are always 8-bit RGB)';
COMMENT ON COLUMN videos.bit_depth IS 'bits per colour sample of the source (10 for 10-bit/HDR sources)';
COMMENT ON COLUMN videos.rotation IS 'display rotation in degrees (0, 90, 180, 270) applied when decoding';
COMMENT ON COLUMN videos.has_audio IS 'true when the file has at least one audio stream';
COMMENT ON COLUMN videos.audio_codec IS 'codec of the first audio stream, NULL without audio';
COMMENT ON COLUMN videos.n_subtitle_streams IS 'number of subtitle streams embedded in the container';
COMMENT ON COLUMN videos.format_name IS 'container format detected by ffprobe (never judged by the file extension)';
COMMENT ON COLUMN videos.size_bytes IS 'file size in bytes';
COMMENT ON COLUMN videos.status IS 'ok, or partial when only part of the file decodes (clips cover the readable part)';
COMMENT ON COLUMN videos.status_detail IS 'why the status is not ok (empty when ok)';
COMMENT ON COLUMN videos.first_path IS 'the path this content was first ingested from (all names: video_files)';
COMMENT ON COLUMN videos.probe_json IS 'the raw ffprobe JSON (format and streams)';
COMMENT ON COLUMN videos.ingested_at IS 'UTC time the content was ingested';
COMMENT ON COLUMN videos.run_id IS 'ingest run that added the row (ingest_runs.run_id)';
