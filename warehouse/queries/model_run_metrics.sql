-- A run's final metrics (arg: model_run): (metrics_json).
SELECT metrics_json FROM model_runs WHERE model_run = ?
