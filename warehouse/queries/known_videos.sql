-- Ingest: video contents already in the warehouse and their usable duration.
SELECT video_id, duration_s FROM videos
