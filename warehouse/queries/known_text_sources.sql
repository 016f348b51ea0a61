-- Ingest: text sources already attached (a changed sidecar replaces its older version).
SELECT text_source_id, video_id, abs_path FROM text_sources
