-- Evaluation: every clip of one split (the clip-level candidates). Params: split.
SELECT c.clip_id, c.video_id FROM clips c JOIN splits s ON s.video_id = c.video_id
WHERE s.split = ?
ORDER BY c.video_id, c.start_s, c.clip_id
