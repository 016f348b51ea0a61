-- Lexical index: every (clip, text segment) pair that overlaps in time, with the segment's
-- words and their times (ASR meta_json) so a clip keeps only the words said inside it.
SELECT c.clip_id, c.video_id, c.start_s AS clip_start, c.end_s AS clip_end,
       t.segment_id, t.text, t.source, t.meta_json
FROM clips c
JOIN text_segments t ON t.video_id = c.video_id AND t.start_s < c.end_s AND t.end_s > c.start_s
ORDER BY c.video_id, c.start_s, t.start_s, t.segment_id
