-- Pretraining corpus: feature vectors of one encoder version for the clips tokenized under a
-- codebook (targets of masked-feature regression).
SELECT f.clip_id, f.vector
FROM clip_features f
JOIN visual_tokens t ON t.clip_id = f.clip_id AND t.codebook_id = ?
WHERE f.encoder = ? AND f.encoder_version = ?
ORDER BY f.clip_id
