-- Every video has exactly one split, one of train/val/test.
SELECT v.video_id, s.split
FROM videos v LEFT JOIN splits s USING (video_id)
WHERE s.split IS NULL OR s.split NOT IN ('train', 'val', 'test')
