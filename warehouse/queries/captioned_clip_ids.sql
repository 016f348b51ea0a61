-- Clips that already have a generated caption from one caption model run. Params: model_run.
SELECT clip_id FROM generated_captions WHERE model_run = ?
