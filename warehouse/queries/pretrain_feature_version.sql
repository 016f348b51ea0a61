-- Pretraining corpus: the newest version of an encoder's clip features (when the codebook was
-- fitted on another encoder, whose version is then unknown).
SELECT encoder_version FROM clip_features WHERE encoder = ?
GROUP BY encoder_version
ORDER BY max(created_at) DESC NULLS LAST, encoder_version DESC
LIMIT 1
