"""Nightly retraining: its lock, crash cleanup, the new-data check and the promotion gate.

Reads: warehouse model_runs, eval_results, promotions, ingest_runs; the nightly lock file.
Writes: warehouse promotions and model_runs status; nothing else (the stages write the rest).
"""
