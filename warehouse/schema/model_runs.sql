-- Every training run (pretraining or retrieval fine-tuning): its config, data, result and checkpoint.
CREATE TABLE model_runs (
    model_run VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    preset VARCHAR NOT NULL,
    parent_run VARCHAR,
    codebook_id VARCHAR,
    status VARCHAR NOT NULL,
    device VARCHAR,
    seed INTEGER,
    steps INTEGER,
    config_json VARCHAR NOT NULL,
    data_json VARCHAR,
    metrics_json VARCHAR,
    checkpoint_path VARCHAR,
    flow_run_id VARCHAR,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    PRIMARY KEY (model_run)
);
COMMENT ON TABLE model_runs IS 'Training runs: one row per pretraining or fine-tuning run (latest state).';
COMMENT ON COLUMN model_runs.model_run IS 'run id (kind + time + random suffix); names the checkpoint folder';
COMMENT ON COLUMN model_runs.kind IS 'pretrain, finetune, caption (a caption model on VideoBERT) or caption-baseline (the same decoder on raw clip features)';
COMMENT ON COLUMN model_runs.preset IS 'model preset: tiny, mini, base or large';
COMMENT ON COLUMN model_runs.parent_run IS 'run this one started from (resumed or continued pretraining, or the pretrained run a fine-tune starts from)';
COMMENT ON COLUMN model_runs.codebook_id IS 'visual-token codebook the model was trained against (codebooks.codebook_id)';
COMMENT ON COLUMN model_runs.status IS 'running, done, failed, or rejected (a caption model the nightly CIDEr-D gate turned down)';
COMMENT ON COLUMN model_runs.device IS 'device it trained on (cpu, cuda, cuda x N with torchrun)';
COMMENT ON COLUMN model_runs.seed IS 'training seed (data order, masking, init)';
COMMENT ON COLUMN model_runs.steps IS 'optimiser steps completed';
COMMENT ON COLUMN model_runs.config_json IS 'model and training configuration as JSON';
COMMENT ON COLUMN model_runs.data_json IS 'training data summary as JSON (videos, examples per kind, held-out videos)';
COMMENT ON COLUMN model_runs.metrics_json IS 'final evaluation metrics as JSON';
COMMENT ON COLUMN model_runs.checkpoint_path IS 'final checkpoint folder (from_pretrained), relative to the data home';
COMMENT ON COLUMN model_runs.flow_run_id IS 'Prefect flow run that trained it';
COMMENT ON COLUMN model_runs.started_at IS 'UTC start time';
COMMENT ON COLUMN model_runs.finished_at IS 'UTC end time (NULL while running)';
