from textvision.config.settings import EmbedSettings, MergeSettings, step_params


rule embed_shard:
    input:
        f"{OUT}/data/dataset.parquet",
    output:
        update(f"{OUT}/embeddings/shards/shard{{shard}}-of{N_SHARDS}.h5"),
    log:
        f"{OUT}/logs/embed_shard/shard{{shard}}-of{N_SHARDS}.log",
    benchmark:
        f"{OUT}/benchmarks/embed_shard/shard{{shard}}-of{N_SHARDS}.tsv"
    conda:
        "../../envs/embed.yaml"
    threads: 8
    resources:
        **res("embed"),
        gpu=GPU,
    params:
        settings=step_params(EmbedSettings, config),
    shell:
        "textvision embed --dataset {input:q} --out {output:q} --shard {wildcards.shard:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule merge_embeddings:
    input:
        dataset=f"{OUT}/data/dataset.parquet",
        shards=shard_files(),
    output:
        update(f"{OUT}/embeddings/embeddings.h5"),
    log:
        f"{OUT}/logs/merge_embeddings.log",
    benchmark:
        f"{OUT}/benchmarks/merge_embeddings/merge_embeddings.tsv"
    conda:
        "../../envs/embed.yaml"
    threads: 1
    resources:
        **res("light"),
    params:
        settings=step_params(MergeSettings, config),
    shell:
        "textvision merge-embeddings --dataset {input.dataset:q} --out {output:q}"
        " --settings {params.settings:q} {input.shards:q} --threads {threads} > {log:q} 2>&1"
