-- Text segments end after they start, start at or after 0, belong to a video and a source.
SELECT s.segment_id, s.start_s, s.end_s
FROM text_segments s
LEFT JOIN videos v USING (video_id)
LEFT JOIN text_sources t USING (text_source_id)
WHERE v.video_id IS NULL OR t.text_source_id IS NULL OR s.end_s <= s.start_s OR s.start_s < 0
