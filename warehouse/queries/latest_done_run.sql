-- Newest finished run of a kind (arg: kind).
SELECT model_run, codebook_id, checkpoint_path, preset FROM model_runs
WHERE kind = ? AND status = 'done' AND checkpoint_path IS NOT NULL
ORDER BY finished_at DESC, model_run DESC
LIMIT 1
