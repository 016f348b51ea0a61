-- Which video a user means: a video id (or a unique prefix of one), a path as ingested, or an
-- absolute path. Params: the text given, its absolute form. Returns (video_id, a path).
SELECT v.video_id, min(f.path) AS path
FROM videos v LEFT JOIN video_files f ON f.video_id = v.video_id
WHERE v.video_id = lower($1) OR (length($1) >= 8 AND starts_with(v.video_id, lower($1)))
   OR f.path = $1 OR f.abs_path = $2
GROUP BY v.video_id
ORDER BY v.video_id
