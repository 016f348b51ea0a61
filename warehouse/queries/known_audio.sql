-- Ingest (speech recognition): each video's audio track and its subtitle/caption cue count.
SELECT v.video_id, v.has_audio, v.audio_codec,
       coalesce(sum(t.n_cues) FILTER (WHERE t.source <> 'asr'), 0) AS text_cues
FROM videos v LEFT JOIN text_sources t USING (video_id)
GROUP BY v.video_id, v.has_audio, v.audio_codec
