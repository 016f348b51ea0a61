-- Evaluation / search: vectors of (encoder, model_run, kind).
SELECT item_id, vector FROM embeddings WHERE encoder = ? AND model_run = ? AND kind = ?
