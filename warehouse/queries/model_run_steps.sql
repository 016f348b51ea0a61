-- Steps a run completed (arg: model_run).
SELECT steps FROM model_runs WHERE model_run = ?
