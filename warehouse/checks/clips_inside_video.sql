-- Clips must lie inside the usable part of their video and have positive length.
SELECT c.clip_id, c.start_s, c.end_s, v.duration_s
FROM clips c LEFT JOIN videos v USING (video_id)
WHERE v.video_id IS NULL OR c.end_s <= c.start_s OR c.start_s < 0 OR c.end_s > v.duration_s + 0.001
