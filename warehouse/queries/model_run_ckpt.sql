-- One finished run with its checkpoint: (model_run, codebook_id, checkpoint_path, preset).
SELECT model_run, codebook_id, checkpoint_path, preset FROM model_runs
WHERE model_run = ? AND status = 'done'
