-- Hybrid search: the clip embeddings of (encoder, model_run) for given clips (those only the
-- lexical index found). Params: encoder, model_run, clip ids.
SELECT item_id, vector FROM embeddings
WHERE encoder = ? AND model_run = ? AND kind = 'clip' AND item_id IN (SELECT unnest(?::VARCHAR[]))
