-- Tokenize: I3D rows (logits) of one version whose clip has no concepts row of a version.
SELECT x.clip_id, x.video_id, x.logits, x.n_frames
FROM clip_features x
WHERE x.encoder = 'i3d' AND x.encoder_version = ? AND x.logits IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM clip_features y WHERE y.clip_id = x.clip_id
                  AND y.encoder = 'concepts' AND y.encoder_version = ?)
ORDER BY x.clip_id
