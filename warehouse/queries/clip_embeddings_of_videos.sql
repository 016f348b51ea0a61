-- Embeddings: the clip embeddings of (encoder, model_run), for pooling into video embeddings.
SELECT e.video_id, e.vector FROM embeddings e
WHERE e.encoder = ? AND e.model_run = ? AND e.kind = 'clip'
ORDER BY e.video_id, e.item_id
