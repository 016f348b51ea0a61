-- Pretrain: the codebook to train against by default: the newest one that has visual tokens.
SELECT c.codebook_id
FROM codebooks c
WHERE EXISTS (SELECT 1 FROM visual_tokens t WHERE t.codebook_id = c.codebook_id)
ORDER BY c.created_at DESC, c.codebook_id
LIMIT 1
