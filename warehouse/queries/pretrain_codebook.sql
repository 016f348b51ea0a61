-- Pretraining corpus: size and source encoder of one codebook.
SELECT n_tokens, encoder, encoder_version FROM codebooks WHERE codebook_id = ?
