-- Zero-shot probe: clips of one split whose caption names its object and motion (meta_json),
-- with the clip's visual token under a codebook. Params: codebook_id, split.
SELECT c.clip_id, c.video_id, vt.token,
       json_extract_string(t.meta_json, '$.object') AS object,
       json_extract_string(t.meta_json, '$.motion') AS motion
FROM text_segments t
JOIN splits s ON s.video_id = t.video_id
JOIN clips c ON c.video_id = t.video_id AND c.start_s < t.end_s AND c.end_s > t.start_s
JOIN visual_tokens vt ON vt.clip_id = c.clip_id AND vt.codebook_id = ?
WHERE s.split = ?
  AND json_extract_string(t.meta_json, '$.object') IS NOT NULL
  AND json_extract_string(t.meta_json, '$.motion') IS NOT NULL
ORDER BY c.video_id, c.start_s, c.clip_id
