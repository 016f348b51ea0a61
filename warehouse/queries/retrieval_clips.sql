-- Retrieval: every clip with a visual token under a codebook, with its video and split.
-- Params: codebook_id.
SELECT c.clip_id, c.video_id, s.split, vt.token
FROM clips c
JOIN splits s ON s.video_id = c.video_id
JOIN visual_tokens vt ON vt.clip_id = c.clip_id AND vt.codebook_id = ?
ORDER BY c.video_id, c.start_s, c.clip_id
