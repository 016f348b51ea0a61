-- Promotion decisions of the nightly flow: which model run (and index) serves search.
CREATE TABLE promotions (
    promotion_id VARCHAR NOT NULL,
    model_run VARCHAR NOT NULL,
    previous_run VARCHAR,
    promoted BOOLEAN NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE,
    previous_value DOUBLE,
    reason VARCHAR NOT NULL,
    flow_run_id VARCHAR,
    "at" TIMESTAMP,
    PRIMARY KEY (promotion_id)
);
COMMENT ON TABLE promotions IS 'Promotion gate decisions: the live model is the latest promoted row.';
COMMENT ON COLUMN promotions.promotion_id IS 'decision id';
COMMENT ON COLUMN promotions.model_run IS 'candidate model run (model_runs.model_run)';
COMMENT ON COLUMN promotions.previous_run IS 'model run live before the decision';
COMMENT ON COLUMN promotions.promoted IS 'true when the candidate became live';
COMMENT ON COLUMN promotions.metric IS 'gate metric (e.g. t2v clip R@5 on the validation split)';
COMMENT ON COLUMN promotions.value IS 'candidate metric value';
COMMENT ON COLUMN promotions.previous_value IS 'live model metric value on the same data';
COMMENT ON COLUMN promotions.reason IS 'why it was (not) promoted';
COMMENT ON COLUMN promotions.flow_run_id IS 'Prefect flow run that decided';
COMMENT ON COLUMN promotions."at" IS 'UTC time of the decision';
