-- Captioning: the text said or written over each clip (every text segment overlapping it in
-- time, in time order): the training targets and the references of the scores.
SELECT c.clip_id, list(t.text ORDER BY t.start_s, t.segment_id) AS texts
FROM clips c
JOIN text_segments t ON t.video_id = c.video_id AND t.start_s < c.end_s AND t.end_s > c.start_s
WHERE trim(t.text) <> ''
GROUP BY c.clip_id
