-- One training run by id (arg: model_run).
SELECT model_run, kind, preset, codebook_id, status, config_json, checkpoint_path, started_at
FROM model_runs
WHERE model_run = ?
