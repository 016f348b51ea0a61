-- Tokenize: the newest codebook fitted on (encoder, encoder_version) features.
SELECT codebook_id, path FROM codebooks
WHERE encoder = ? AND encoder_version = ?
ORDER BY created_at DESC, codebook_id
LIMIT 1
