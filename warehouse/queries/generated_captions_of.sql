-- Generated captions of one model run for some clips. Params: model_run, clip ids (list).
SELECT clip_id, text, score FROM generated_captions
WHERE model_run = ? AND list_contains(?, clip_id)
