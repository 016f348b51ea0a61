-- Captions written by a caption model for clips (videobert caption --all), one per clip and model run.
CREATE TABLE generated_captions (
    clip_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    model_run VARCHAR NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    text VARCHAR NOT NULL,
    score DOUBLE,
    decoding_json VARCHAR NOT NULL,
    created_at TIMESTAMP,
    PRIMARY KEY (clip_id, model_run)
);
COMMENT ON TABLE generated_captions IS 'Generated clip captions: what a caption model says each clip shows.';
COMMENT ON COLUMN generated_captions.clip_id IS 'the clip described (clips.clip_id)';
COMMENT ON COLUMN generated_captions.video_id IS 'its video (videos.video_id)';
COMMENT ON COLUMN generated_captions.model_run IS 'caption model run that wrote it (model_runs.model_run, kind caption)';
COMMENT ON COLUMN generated_captions.start_s IS 'clip start in the video, seconds';
COMMENT ON COLUMN generated_captions.end_s IS 'clip end in the video, seconds';
COMMENT ON COLUMN generated_captions.text IS 'the caption';
COMMENT ON COLUMN generated_captions.score IS 'its length-penalised log-probability (beam search) or mean log-probability per word (greedy)';
COMMENT ON COLUMN generated_captions.decoding_json IS 'decoding parameters as JSON: beams, max_len, length_penalty, no_repeat_ngram';
COMMENT ON COLUMN generated_captions.created_at IS 'UTC time it was written';
