# report.smk's lists of files.
from textvision.config.variants import shares_images


def benchmark_files():
    """The benchmark file of every job the report summarises (all of `all` but the report), as
    each rule's `benchmark:` names it."""
    once = [
        rules.prepare_data,
        rules.merge_embeddings,
        rules.fit_mapping,
        rules.render_images,
        rules.plot_mapping,
    ]
    if config["baseline"]["enabled"]:
        once.append(rules.baseline_logreg)
    files = expand([rule.benchmark for rule in once])
    files += expand(rules.embed_shard.benchmark, shard=range(N_SHARDS))
    files += expand(rules.domain_shift.benchmark, backbone=BACKBONES)
    files += expand(rules.train.benchmark, backbone=BACKBONES, seed=SEEDS)
    for variant, vconfig in VARIANTS.items():
        if not shares_images(config, variant):
            own = [rules.fit_mapping_variant, rules.render_images_variant]
            files += expand([rule.benchmark for rule in own], variant=variant)
        files += expand(
            rules.train_variant.benchmark,
            variant=variant,
            backbone=vconfig["training"]["backbones"],
            seed=vconfig["training"]["seeds"],
        )
    return files + explain_benchmarks()


def variant_mappings():
    """The mapping file of every variant that fits its own (the report's image layouts)."""
    own = [variant for variant in VARIANTS if not shares_images(config, variant)]
    return expand(rules.fit_mapping_variant.output[0], variant=own)
