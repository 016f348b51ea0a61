-- Embeddings: every non-empty text segment.
SELECT segment_id, video_id, text FROM text_segments
WHERE trim(text) <> ''
ORDER BY video_id, start_s, segment_id
