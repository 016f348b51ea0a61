-- Each clip's visual token under a codebook.
CREATE TABLE visual_tokens (
    clip_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    codebook_id VARCHAR NOT NULL,
    token INTEGER NOT NULL,
    path INTEGER[] NOT NULL,
    assigned_at TIMESTAMP,
    PRIMARY KEY (clip_id, codebook_id)
);
COMMENT ON TABLE visual_tokens IS 'Visual token of each clip under each codebook.';
COMMENT ON COLUMN visual_tokens.clip_id IS 'the clip (clips.clip_id)';
COMMENT ON COLUMN visual_tokens.video_id IS 'the video (videos.video_id)';
COMMENT ON COLUMN visual_tokens.codebook_id IS 'the codebook (codebooks.codebook_id)';
COMMENT ON COLUMN visual_tokens.token IS 'token id in [0, n_tokens): the leaf reached descending the tree';
COMMENT ON COLUMN visual_tokens.path IS 'the child index chosen at each level, root first';
COMMENT ON COLUMN visual_tokens.assigned_at IS 'UTC time of the assignment';
