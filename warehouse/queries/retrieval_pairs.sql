-- Retrieval: every text segment of one split with the clips it overlaps in time and their
-- visual tokens under a codebook (clips in time order). Params: codebook_id, split.
SELECT t.segment_id, t.video_id, t.text,
       list(c.clip_id ORDER BY c.start_s, c.clip_id) AS clip_ids,
       list(vt.token ORDER BY c.start_s, c.clip_id) AS tokens
FROM text_segments t
JOIN splits s ON s.video_id = t.video_id
JOIN clips c ON c.video_id = t.video_id AND c.start_s < t.end_s AND c.end_s > t.start_s
JOIN visual_tokens vt ON vt.clip_id = c.clip_id AND vt.codebook_id = ?
WHERE s.split = ? AND trim(t.text) <> ''
GROUP BY t.segment_id, t.video_id, t.text
ORDER BY t.video_id, t.segment_id
