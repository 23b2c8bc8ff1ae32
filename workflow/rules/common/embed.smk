# embed.smk's lists of files.
def shard_files():
    """Every shard's file (`embedding.shards` of them), what `merge_embeddings` merges."""
    return expand(rules.embed_shard.output[0], shard=range(N_SHARDS))
