-- Metrics logged during training, one row per (run, step, split, metric): long format for SQL.
CREATE TABLE training_metrics (
    model_run VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    split VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE NOT NULL,
    "at" TIMESTAMP,
    PRIMARY KEY (model_run, step, split, metric)
);
COMMENT ON TABLE training_metrics IS 'Training and evaluation metrics per step (losses per objective, accuracies).';
COMMENT ON COLUMN training_metrics.model_run IS 'the run (model_runs.model_run)';
COMMENT ON COLUMN training_metrics.step IS 'optimiser step the metric was measured at';
COMMENT ON COLUMN training_metrics.split IS 'train (running mean since the last eval) or val (held-out videos)';
COMMENT ON COLUMN training_metrics.metric IS 'e.g. loss, loss_text_mlm, loss_video_mlm, loss_align, acc_text_mlm, acc_video_mlm, acc_align, lr, tokens_per_s';
COMMENT ON COLUMN training_metrics.value IS 'the value';
COMMENT ON COLUMN training_metrics."at" IS 'UTC time it was logged';
