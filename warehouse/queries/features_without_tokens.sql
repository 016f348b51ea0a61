-- Tokenize: features of one encoder version whose clip has no token under a codebook.
SELECT x.clip_id, x.video_id, x.vector FROM clip_features x
WHERE x.encoder = ? AND x.encoder_version = ?
  AND NOT EXISTS (SELECT 1 FROM visual_tokens t
                  WHERE t.clip_id = x.clip_id AND t.codebook_id = ?)
ORDER BY x.clip_id
