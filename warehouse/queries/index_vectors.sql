-- Index build: the vectors of (encoder, model_run, kind), in a stable order.
SELECT item_id, video_id, vector FROM embeddings
WHERE encoder = ? AND model_run = ? AND kind = ?
ORDER BY item_id
