"""Stage 2, `embed_shard` and `merge_embeddings`: BERT-family encoders -> `[CLS]` vectors in
`embeddings.h5`."""
