-- Nightly crash cleanup: training runs still marked running that started before a time (arg:
-- timestamp). Full rows, so each can be rewritten with status failed.
SELECT * FROM model_runs
WHERE status = 'running' AND started_at < ?
ORDER BY started_at, model_run
