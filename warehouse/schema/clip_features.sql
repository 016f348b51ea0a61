-- One feature vector per (clip, encoder version): I3D Mixed_5c features (with Kinetics
-- logits), CLIP clip embeddings, or the concepts baseline's embeddings.
CREATE TABLE clip_features (
    clip_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    encoder VARCHAR NOT NULL,
    encoder_version VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    vector FLOAT[] NOT NULL,
    logits FLOAT[],
    n_frames INTEGER,
    created_at TIMESTAMP,
    run_id VARCHAR,
    PRIMARY KEY (clip_id, encoder, encoder_version)
);
COMMENT ON TABLE clip_features IS 'Per-clip feature vectors, one row per (clip, encoder version).';
COMMENT ON COLUMN clip_features.clip_id IS 'the clip (clips.clip_id)';
COMMENT ON COLUMN clip_features.video_id IS 'the video (videos.video_id)';
COMMENT ON COLUMN clip_features.encoder IS 'i3d, clip or concepts';
COMMENT ON COLUMN clip_features.encoder_version IS 'weights/config hash of the encoder: rows of another version are stale';
COMMENT ON COLUMN clip_features.dim IS 'vector length (1024 for i3d, 384 for concepts, the model''s for clip)';
COMMENT ON COLUMN clip_features.vector IS 'the feature; cast for array functions: vector::FLOAT[1024]';
COMMENT ON COLUMN clip_features.logits IS 'Kinetics-400 logits (i3d rows only)';
COMMENT ON COLUMN clip_features.n_frames IS 'frames the encoder saw for this clip';
COMMENT ON COLUMN clip_features.created_at IS 'UTC time the row was computed';
COMMENT ON COLUMN clip_features.run_id IS 'flow run that computed it';
