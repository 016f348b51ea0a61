-- Search: what to show for each hit clip: a path the video was seen under, the clip's times,
-- the text said there (segments overlapping the clip, in time order) and its newest generated
-- caption. Param: clip ids.
WITH hits AS (SELECT unnest(?::VARCHAR[]) AS clip_id)
SELECT c.clip_id, c.video_id, c.start_s, c.end_s,
       (SELECT min(f.path) FROM video_files f WHERE f.video_id = c.video_id) AS path,
       (SELECT string_agg(t.text, ' ' ORDER BY t.start_s, t.segment_id) FROM text_segments t
         WHERE t.video_id = c.video_id AND t.start_s < c.end_s AND t.end_s > c.start_s) AS text,
       (SELECT g.text FROM generated_captions g WHERE g.clip_id = c.clip_id
         ORDER BY g.created_at DESC, g.model_run DESC LIMIT 1) AS caption
FROM hits h JOIN clips c ON c.clip_id = h.clip_id
