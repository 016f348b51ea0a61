-- Clip embeddings of one encoder and model run (nearest-neighbour captioning). Params: encoder, model_run.
SELECT item_id, vector FROM embeddings WHERE kind = 'clip' AND encoder = ? AND model_run = ?
