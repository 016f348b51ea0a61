-- Timed text said or shown in a video: subtitle cues, manifest captions, speech recognition.
CREATE TABLE text_segments (
    segment_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    text_source_id VARCHAR NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    text VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    language VARCHAR,
    cue_index INTEGER,
    confidence DOUBLE,
    model VARCHAR,
    meta_json VARCHAR,
    PRIMARY KEY (segment_id)
);
COMMENT ON TABLE text_segments IS 'Timed text of each video (subtitles, captions, speech).';
COMMENT ON COLUMN text_segments.segment_id IS 'text_source_id + cue position (stable across re-runs)';
COMMENT ON COLUMN text_segments.video_id IS 'the video (videos.video_id)';
COMMENT ON COLUMN text_segments.text_source_id IS 'where the text came from (text_sources.text_source_id)';
COMMENT ON COLUMN text_segments.start_s IS 'start in seconds from the start of the video';
COMMENT ON COLUMN text_segments.end_s IS 'end in seconds (always after start_s)';
COMMENT ON COLUMN text_segments.text IS 'the text, tags stripped and whitespace collapsed';
COMMENT ON COLUMN text_segments.source IS 'srt, vtt, embedded, manifest or asr';
COMMENT ON COLUMN text_segments.language IS 'language tag when known';
COMMENT ON COLUMN text_segments.cue_index IS 'position of the cue in its source';
COMMENT ON COLUMN text_segments.confidence IS 'asr: exp(average token log-probability) of the segment, in (0, 1]; NULL otherwise';
COMMENT ON COLUMN text_segments.model IS 'asr: the ASR model id that produced the text; NULL otherwise';
COMMENT ON COLUMN text_segments.meta_json IS 'extra manifest fields for this caption as JSON (e.g. object, motion); asr: words as [start, end, word, probability], avg_logprob, no_speech_prob, compression_ratio, temperature';
