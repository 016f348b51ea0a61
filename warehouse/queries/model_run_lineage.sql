-- A run and its parent (arg: model_run): (model_run, parent_run, codebook_id, started_at,
-- parent_started_at). The nightly flow continues pretraining from the live run's parent.
SELECT m.model_run, m.parent_run, m.codebook_id, m.started_at, p.started_at
FROM model_runs m LEFT JOIN model_runs p ON p.model_run = m.parent_run
WHERE m.model_run = ?
