-- Pretrain resume: how many metric rows a run logged after a step (args: model_run, step).
SELECT count(*) FROM training_metrics WHERE model_run = ? AND step > ?
