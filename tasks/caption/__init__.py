"""Captioning: train a BART-style decoder on VideoBERT, describe clips, score the captions.

Reads: a VideoBERT run, warehouse clips/visual_tokens/clip_features/text_segments.
Writes: model_runs (kind caption), generated_captions, caption_eval; reports/ and models/.
"""
