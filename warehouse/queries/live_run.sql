-- The live fine-tune run: the newest promoted one, else the newest finished fine-tune.
WITH promoted AS (
    SELECT p.model_run FROM promotions p WHERE p.promoted
    ORDER BY p."at" DESC, p.promotion_id DESC LIMIT 1
)
SELECT m.model_run, m.codebook_id, m.checkpoint_path, m.preset FROM model_runs m
WHERE m.model_run IN (SELECT model_run FROM promoted)
   OR (NOT EXISTS (SELECT 1 FROM promoted) AND m.kind = 'finetune' AND m.status = 'done')
ORDER BY m.finished_at DESC, m.model_run DESC
LIMIT 1
