-- Hierarchical k-means trees that turn clip features into VideoBERT's visual tokens.
CREATE TABLE codebooks (
    codebook_id VARCHAR NOT NULL,
    encoder VARCHAR NOT NULL,
    encoder_version VARCHAR NOT NULL,
    levels INTEGER NOT NULL,
    branching INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    n_points BIGINT NOT NULL,
    seed INTEGER,
    path VARCHAR NOT NULL,
    stats_json VARCHAR,
    created_at TIMESTAMP,
    PRIMARY KEY (codebook_id)
);
COMMENT ON TABLE codebooks IS 'Visual-token vocabularies: one hierarchical k-means tree per row.';
COMMENT ON COLUMN codebooks.codebook_id IS 'content hash of the tree (parameters and centroids)';
COMMENT ON COLUMN codebooks.encoder IS 'encoder whose features were clustered';
COMMENT ON COLUMN codebooks.encoder_version IS 'encoder version of those features';
COMMENT ON COLUMN codebooks.levels IS 'tree depth (VideoBERT: 4)';
COMMENT ON COLUMN codebooks.branching IS 'children per node (VideoBERT: 12)';
COMMENT ON COLUMN codebooks.n_tokens IS 'vocabulary size: branching ^ levels';
COMMENT ON COLUMN codebooks.n_points IS 'clips the tree was fitted on (all of them)';
COMMENT ON COLUMN codebooks.seed IS 'k-means seed';
COMMENT ON COLUMN codebooks.path IS 'tree file (safetensors + JSON), relative to the data home';
COMMENT ON COLUMN codebooks.stats_json IS 'per level: inertia, empty clusters, cluster sizes';
COMMENT ON COLUMN codebooks.created_at IS 'UTC time of the fit';
