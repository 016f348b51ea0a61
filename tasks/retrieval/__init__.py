"""Retrieval: fine-tune a dual encoder, embed, build FAISS indices, evaluate, search.

Reads: a pretraining run, warehouse clips/text_segments/clip_features, published indices.
Writes: warehouse embeddings, indices, eval_results; index files under indices/, reports/.
"""
