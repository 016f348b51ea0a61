-- Captioning: every clip with its visual token under a codebook, its split and video, in time
-- order per video (so neighbours can be read off). Params: codebook_id.
SELECT c.clip_id, c.video_id, c.start_s, c.end_s, vt.token, coalesce(s.split, 'train') AS split
FROM clips c
JOIN visual_tokens vt ON vt.clip_id = c.clip_id AND vt.codebook_id = ?
LEFT JOIN splits s ON s.video_id = c.video_id
ORDER BY c.video_id, c.start_s, c.clip_id
