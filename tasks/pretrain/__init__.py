"""Pretraining: VideoBERT over text and visual tokens (masked tokens + text-video alignment).

Reads: warehouse text_segments, visual_tokens, clip_features (exported to a corpus file).
Writes: checkpoints and metrics under runs/, warehouse model_runs and training_metrics.
"""
