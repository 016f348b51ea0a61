-- Retrieval embeddings of clips, text segments and whole videos, per (encoder, model run).
CREATE TABLE embeddings (
    item_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    encoder VARCHAR NOT NULL,
    model_run VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    vector FLOAT[] NOT NULL,
    created_at TIMESTAMP,
    PRIMARY KEY (item_id, kind, encoder, model_run)
);
COMMENT ON TABLE embeddings IS 'L2-normalised retrieval embeddings: clips, text segments and videos, per encoder and model run.';
COMMENT ON COLUMN embeddings.item_id IS 'clips.clip_id (kind clip), text_segments.segment_id (kind text) or videos.video_id (kind video)';
COMMENT ON COLUMN embeddings.kind IS 'clip, text or video';
COMMENT ON COLUMN embeddings.encoder IS 'videobert, concepts or clip';
COMMENT ON COLUMN embeddings.model_run IS 'model run that produced it (model_runs.model_run), or the encoder version for encoders not trained here';
COMMENT ON COLUMN embeddings.video_id IS 'the video the item belongs to (videos.video_id)';
COMMENT ON COLUMN embeddings.dim IS 'vector length';
COMMENT ON COLUMN embeddings.vector IS 'unit-length vector; cast for array functions: vector::FLOAT[256]';
COMMENT ON COLUMN embeddings.created_at IS 'UTC time it was computed';
