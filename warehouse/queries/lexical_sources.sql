-- Lexical index: every (clip, text segment) pair that overlaps in time, with the segment's
-- words and their times (ASR meta_json) so a clip keeps only the words said inside it; and the
-- newest caption model's generated caption of each clip (source 'generated'), so a clip where
-- nothing is said is still found by words.
WITH gen_run AS (
    SELECT model_run FROM generated_captions GROUP BY model_run
    ORDER BY max(created_at) DESC, model_run DESC LIMIT 1
)
SELECT c.clip_id, c.video_id, c.start_s AS clip_start, c.end_s AS clip_end,
       t.segment_id, t.text, t.source, t.meta_json, t.start_s AS text_start
FROM clips c
JOIN text_segments t ON t.video_id = c.video_id AND t.start_s < c.end_s AND t.end_s > c.start_s
UNION ALL
SELECT g.clip_id, g.video_id, g.start_s, g.end_s, 'generated:' || g.model_run || ':' || g.clip_id,
       g.text, 'generated', NULL, g.end_s
FROM generated_captions g
WHERE g.model_run IN (SELECT model_run FROM gen_run)
ORDER BY 2, 3, 9, 5
