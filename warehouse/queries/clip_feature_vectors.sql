-- Search rerank: the newest feature version of an encoder for given clips. Params: encoder,
-- clip ids.
SELECT clip_id, vector FROM clip_features
WHERE encoder = ? AND clip_id IN (SELECT unnest(?::VARCHAR[]))
QUALIFY row_number() OVER (PARTITION BY clip_id ORDER BY created_at DESC NULLS LAST,
                                                          encoder_version DESC) = 1
