-- Every file name points to an ingested video, and every video has at least one name.
SELECT 'file without video' AS problem, f.abs_path AS item
FROM video_files f ANTI JOIN videos v USING (video_id)
UNION ALL
SELECT 'video without file', v.video_id FROM videos v ANTI JOIN video_files f USING (video_id)
