-- Tokenize: clips without features for (encoder, encoder_version), with every file path of
-- their video (the first that still exists is read).
SELECT c.clip_id, c.video_id, c.start_s, c.end_s, c.clip_s, list(DISTINCT f.abs_path ORDER BY f.abs_path) AS paths
FROM clips c JOIN video_files f USING (video_id)
WHERE NOT EXISTS (SELECT 1 FROM clip_features x
                  WHERE x.clip_id = c.clip_id AND x.encoder = ? AND x.encoder_version = ?)
GROUP BY ALL
ORDER BY c.video_id, c.start_s
