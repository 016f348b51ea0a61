-- Nightly: ingest runs that added videos or text after a time (arg: timestamp, the start of
-- the live model's training data export); any row means there is data the live model lacks.
SELECT count(*) FROM ingest_runs
WHERE finished_at > ? AND (n_ingested > 0 OR n_text_sources > 0)
