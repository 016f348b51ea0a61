-- Train/val/test assignment of each video, from a caption manifest or a hash of the content.
CREATE TABLE splits (
    video_id VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    assigned_by VARCHAR NOT NULL,
    PRIMARY KEY (video_id)
);
COMMENT ON TABLE splits IS 'Train/val/test split of every video.';
COMMENT ON COLUMN splits.video_id IS 'the video (videos.video_id)';
COMMENT ON COLUMN splits.split IS 'train, val or test';
COMMENT ON COLUMN splits.assigned_by IS 'manifest (a split column in a caption manifest) or hash (80/10/10 from video_id, deterministic)';
