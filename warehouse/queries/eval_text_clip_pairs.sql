-- Evaluation: text segments of one split and the clips of their video they overlap in time.
-- Params: split.
SELECT t.segment_id, t.video_id, list(c.clip_id ORDER BY c.start_s, c.clip_id) AS clip_ids
FROM text_segments t
JOIN splits s ON s.video_id = t.video_id
JOIN clips c ON c.video_id = t.video_id AND c.start_s < t.end_s AND c.end_s > t.start_s
WHERE s.split = ? AND trim(t.text) <> ''
GROUP BY t.segment_id, t.video_id
ORDER BY t.video_id, t.segment_id
