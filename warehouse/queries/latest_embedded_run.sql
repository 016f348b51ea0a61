-- Evaluation: the newest model_run with embeddings of an encoder (arg: encoder).
SELECT model_run FROM embeddings WHERE encoder = ?
GROUP BY model_run ORDER BY max(created_at) DESC, model_run LIMIT 1
