-- One row per finished ingest run, with its counts.
CREATE TABLE ingest_runs (
    run_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    n_files INTEGER,
    n_ingested INTEGER,
    n_duplicates INTEGER,
    n_rejected INTEGER,
    n_unchanged INTEGER,
    n_text_sources INTEGER,
    rejected_json VARCHAR,
    PRIMARY KEY (run_id)
);
COMMENT ON TABLE ingest_runs IS 'Each completed ingest run and what it did.';
COMMENT ON COLUMN ingest_runs.run_id IS 'run id (a UUID, or the Prefect flow-run id)';
COMMENT ON COLUMN ingest_runs.source IS 'absolute folder or manifest that was ingested';
COMMENT ON COLUMN ingest_runs.started_at IS 'UTC start time';
COMMENT ON COLUMN ingest_runs.finished_at IS 'UTC end time';
COMMENT ON COLUMN ingest_runs.n_files IS 'candidate files seen (videos, subtitles and manifests)';
COMMENT ON COLUMN ingest_runs.n_ingested IS 'new video contents added';
COMMENT ON COLUMN ingest_runs.n_duplicates IS 'new names recorded for content already known';
COMMENT ON COLUMN ingest_runs.n_rejected IS 'new ingest_errors rows';
COMMENT ON COLUMN ingest_runs.n_unchanged IS 'files skipped because they were already ingested or rejected unchanged';
COMMENT ON COLUMN ingest_runs.n_text_sources IS 'new text sources attached';
COMMENT ON COLUMN ingest_runs.rejected_json IS 'new rejections by code as JSON';
