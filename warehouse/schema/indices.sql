-- FAISS indices built from the embeddings table.
CREATE TABLE indices (
    index_id VARCHAR NOT NULL,
    encoder VARCHAR NOT NULL,
    model_run VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    index_type VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    ntotal BIGINT NOT NULL,
    path VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    params_json VARCHAR,
    build_s DOUBLE,
    built_at TIMESTAMP,
    PRIMARY KEY (index_id)
);
COMMENT ON TABLE indices IS 'FAISS indices, one per (encoder, model run, level) build.';
COMMENT ON COLUMN indices.index_id IS 'content hash of the index file';
COMMENT ON COLUMN indices.encoder IS 'encoder of the indexed embeddings';
COMMENT ON COLUMN indices.model_run IS 'model run of the indexed embeddings';
COMMENT ON COLUMN indices.level IS 'clip or video';
COMMENT ON COLUMN indices.index_type IS 'FAISS factory string (Flat, HNSW32, IVF4096,Flat, IVF4096,PQ64, ...)';
COMMENT ON COLUMN indices.dim IS 'vector length';
COMMENT ON COLUMN indices.ntotal IS 'vectors in the index';
COMMENT ON COLUMN indices.path IS 'index folder (index.faiss, ids.parquet, manifest.json), relative to the data home';
COMMENT ON COLUMN indices.sha256 IS 'sha256 of index.faiss, checked before loading';
COMMENT ON COLUMN indices.params_json IS 'build and search parameters (nlist, M, efSearch, nprobe, memory budget)';
COMMENT ON COLUMN indices.build_s IS 'build time in seconds';
COMMENT ON COLUMN indices.built_at IS 'UTC build time';
