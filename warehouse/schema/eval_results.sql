-- Retrieval evaluation: one row per (evaluation, encoder, direction, level, mode).
CREATE TABLE eval_results (
    eval_id VARCHAR NOT NULL,
    encoder VARCHAR NOT NULL,
    model_run VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    direction VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    n_queries INTEGER NOT NULL,
    n_candidates INTEGER NOT NULL,
    r1 DOUBLE NOT NULL,
    r5 DOUBLE NOT NULL,
    r10 DOUBLE NOT NULL,
    mdr DOUBLE NOT NULL,
    mnr DOUBLE NOT NULL,
    "at" TIMESTAMP,
    PRIMARY KEY (eval_id, encoder, model_run, level, direction, mode)
);
COMMENT ON TABLE eval_results IS 'Text<->video retrieval metrics per encoder and model run (R@K in percent).';
COMMENT ON COLUMN eval_results.eval_id IS 'one evaluation run (several encoders share it)';
COMMENT ON COLUMN eval_results.encoder IS 'concepts, clip, videobert, videobert+rerank, lexical (BM25 over what is said, leave-one-out) or ENCODER+lexical (hybrid: that encoder fused with lexical search)';
COMMENT ON COLUMN eval_results.model_run IS 'model run or encoder version evaluated';
COMMENT ON COLUMN eval_results.split IS 'split of the queries and candidates (test by default)';
COMMENT ON COLUMN eval_results.level IS 'clip (caption -> its clip) or video (caption -> its video)';
COMMENT ON COLUMN eval_results.direction IS 't2v (text -> video) or v2t (video -> text)';
COMMENT ON COLUMN eval_results.mode IS 'exact (brute force) or index (through the published FAISS index; videobert+rerank: its top candidates re-ranked)';
COMMENT ON COLUMN eval_results.n_queries IS 'queries evaluated';
COMMENT ON COLUMN eval_results.n_candidates IS 'candidates each query ranks';
COMMENT ON COLUMN eval_results.r1 IS 'recall@1 in percent';
COMMENT ON COLUMN eval_results.r5 IS 'recall@5 in percent';
COMMENT ON COLUMN eval_results.r10 IS 'recall@10 in percent';
COMMENT ON COLUMN eval_results.mdr IS 'median rank of the first correct candidate (1 = top)';
COMMENT ON COLUMN eval_results.mnr IS 'mean rank of the first correct candidate';
COMMENT ON COLUMN eval_results."at" IS 'UTC time of the evaluation';
