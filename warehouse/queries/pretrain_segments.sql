-- Pretraining corpus: every timed text segment (all sources), in time order per video.
SELECT x.video_id, x.start_s, x.end_s, x.text
FROM text_segments x
JOIN splits s ON s.video_id = x.video_id
WHERE x.end_s > x.start_s AND trim(x.text) <> ''
ORDER BY x.video_id, x.start_s, x.end_s, x.segment_id
