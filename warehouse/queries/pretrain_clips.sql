-- Pretraining corpus: clips that have a visual token under a codebook, in time order per
-- video (clips without a token are left out).
SELECT c.video_id, c.clip_id, c.start_s, c.end_s, t.token
FROM clips c
JOIN visual_tokens t ON t.clip_id = c.clip_id AND t.codebook_id = ?
JOIN splits s ON s.video_id = c.video_id
ORDER BY c.video_id, c.start_s, c.clip_index
