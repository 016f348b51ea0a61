-- Embeddings: items already embedded for (encoder, model_run), so a re-run only adds new ones.
SELECT item_id, kind FROM embeddings WHERE encoder = ? AND model_run = ?
