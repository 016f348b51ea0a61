-- The text of given segments (arg: segment ids).
SELECT segment_id, text FROM text_segments WHERE segment_id IN (SELECT unnest(?::VARCHAR[]))
