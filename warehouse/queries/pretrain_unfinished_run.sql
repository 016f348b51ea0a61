-- Pretrain --resume: the newest pretraining run of a preset that did not finish (arg: preset).
SELECT model_run, codebook_id, config_json, parent_run, seed, started_at
FROM model_runs
WHERE kind = 'pretrain' AND preset = ? AND status <> 'done'
ORDER BY started_at DESC, model_run DESC
LIMIT 1
