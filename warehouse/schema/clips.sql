-- VideoBERT's unit: fixed windows (1.5 s by default) over the usable part of each video.
CREATE TABLE clips (
    clip_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    clip_index INTEGER NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    clip_s DOUBLE NOT NULL,
    PRIMARY KEY (clip_id)
);
COMMENT ON TABLE clips IS 'Fixed-length windows over each video (VideoBERT''s 1.5 s clips).';
COMMENT ON COLUMN clips.clip_id IS 'stable id: first 16 hex of video_id, window length in ms, index (e.g. 3f9a..._1500_000012)';
COMMENT ON COLUMN clips.video_id IS 'the video (videos.video_id)';
COMMENT ON COLUMN clips.clip_index IS '0-based position of the window in the video';
COMMENT ON COLUMN clips.start_s IS 'window start in seconds from the start of the video';
COMMENT ON COLUMN clips.end_s IS 'window end in seconds (start_s + clip_s, or the video end for a final shorter window)';
COMMENT ON COLUMN clips.clip_s IS 'configured window length in seconds the clip was cut with';
