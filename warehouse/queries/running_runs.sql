-- Nightly crash cleanup: training runs still marked running (full rows, so each can be
-- rewritten with status failed once its process is known to be gone).
SELECT * FROM model_runs
WHERE status = 'running'
ORDER BY started_at, model_run
