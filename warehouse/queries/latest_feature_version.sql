-- The newest encoder_version of an encoder's clip features.
SELECT encoder_version FROM clip_features WHERE encoder = ?
GROUP BY encoder_version ORDER BY max(created_at) DESC, encoder_version LIMIT 1
