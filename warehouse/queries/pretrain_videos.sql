-- Pretraining corpus: every video with its split (the split table covers every video), by id.
SELECT video_id, split FROM splits ORDER BY video_id
