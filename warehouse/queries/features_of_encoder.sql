-- Tokenize: every feature vector of one encoder version (codebook fitting).
SELECT clip_id, video_id, vector FROM clip_features
WHERE encoder = ? AND encoder_version = ?
ORDER BY clip_id
