-- Ingest summary: rejections added by one run, by code.
SELECT code, count(*) FROM ingest_errors WHERE run_id = ? GROUP BY code ORDER BY code
