"""Visual tokens: per-clip features (I3D, CLIP, concepts), hierarchical k-means, a codebook.

Reads: warehouse clips and the video files they point at; model weights in the data home.
Writes: warehouse clip_features, codebooks, visual_tokens; the codebook gallery PNG.
"""
