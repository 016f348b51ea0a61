-- Captioning evaluation: one row per (evaluation, system); scores by pycocoevalcap.
CREATE TABLE caption_eval (
    eval_id VARCHAR NOT NULL,
    system VARCHAR NOT NULL,
    model_run VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    n_clips INTEGER NOT NULL,
    bleu1 DOUBLE NOT NULL,
    bleu2 DOUBLE NOT NULL,
    bleu3 DOUBLE NOT NULL,
    bleu4 DOUBLE NOT NULL,
    meteor DOUBLE,
    rouge_l DOUBLE NOT NULL,
    cider DOUBLE NOT NULL,
    object_acc DOUBLE,
    motion_acc DOUBLE,
    both_acc DOUBLE,
    decoding_json VARCHAR,
    "at" TIMESTAMP,
    PRIMARY KEY (eval_id, system)
);
COMMENT ON TABLE caption_eval IS 'Caption quality per system on a split: BLEU, METEOR, ROUGE-L in percent, CIDEr-D as is.';
COMMENT ON COLUMN caption_eval.eval_id IS 'one evaluation run (the systems it compares share it)';
COMMENT ON COLUMN caption_eval.system IS 'videobert (decoder on VideoBERT), features (the same decoder on the raw clip features, no VideoBERT) or nearest (the caption of the most similar train clip)';
COMMENT ON COLUMN caption_eval.model_run IS 'caption model run (nearest: the retrieval run whose embeddings it used)';
COMMENT ON COLUMN caption_eval.split IS 'split of the clips scored (test by default)';
COMMENT ON COLUMN caption_eval.n_clips IS 'captioned clips scored';
COMMENT ON COLUMN caption_eval.bleu1 IS 'BLEU-1, percent';
COMMENT ON COLUMN caption_eval.bleu2 IS 'BLEU-2, percent';
COMMENT ON COLUMN caption_eval.bleu3 IS 'BLEU-3, percent';
COMMENT ON COLUMN caption_eval.bleu4 IS 'BLEU-4, percent';
COMMENT ON COLUMN caption_eval.meteor IS 'METEOR 1.5, percent (NULL: no Java to run it)';
COMMENT ON COLUMN caption_eval.rouge_l IS 'ROUGE-L, percent';
COMMENT ON COLUMN caption_eval.cider IS 'CIDEr-D';
COMMENT ON COLUMN caption_eval.object_acc IS 'percent of clips whose caption names the object of the reference (synthetic corpus grammar; NULL elsewhere)';
COMMENT ON COLUMN caption_eval.motion_acc IS 'percent of clips whose caption names the motion of the reference (NULL: no known grammar)';
COMMENT ON COLUMN caption_eval.both_acc IS 'percent of clips whose caption names both (NULL: no known grammar)';
COMMENT ON COLUMN caption_eval.decoding_json IS 'decoding parameters as JSON (generated systems)';
COMMENT ON COLUMN caption_eval."at" IS 'UTC time of the evaluation';
