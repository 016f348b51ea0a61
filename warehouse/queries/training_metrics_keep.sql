-- Pretrain resume: every metric row except a run's rows after a step (args: model_run, step).
SELECT * FROM training_metrics WHERE NOT (model_run = ? AND step > ?)
