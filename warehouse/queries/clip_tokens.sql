-- Search rerank: visual tokens of given clips under a codebook. Params: codebook_id, clip ids.
SELECT clip_id, token FROM visual_tokens
WHERE codebook_id = ? AND clip_id IN (SELECT unnest(?::VARCHAR[]))
