rule embed_shard:
    input:
        f"{OUT}/data/dataset.parquet",
    output:
        f"{OUT}/embeddings/shards/shard{{shard}}-of{N_SHARDS}.h5",
    log:
        f"{OUT}/logs/embed_shard/shard{{shard}}-of{N_SHARDS}.log",
    conda:
        "../../envs/embed.yaml"
    threads: 8
    resources:
        **res("embed"),
        gpu=GPU,
    params:
        model=config["embedding"]["model"],
        layers=json.dumps(config["embedding"]["layers"]),
        max_length=config["embedding"]["max_length"],
        batch_size=config["embedding"]["batch_size"],
        precision=config["embedding"]["precision"],
        device=config["device"],
        n_shards=N_SHARDS,
    shell:
        "textvision embed --dataset {input:q} --out {output:q} --model {params.model:q}"
        " --layers {params.layers:q} --max-length {params.max_length:q}"
        " --batch-size {params.batch_size:q} --precision {params.precision:q}"
        " --device {params.device:q} --shard {wildcards.shard:q} --n-shards {params.n_shards:q}"
        " --threads {threads} > {log:q} 2>&1"


rule merge_embeddings:
    input:
        dataset=f"{OUT}/data/dataset.parquet",
        shards=shard_files(),
    output:
        f"{OUT}/embeddings/embeddings.h5",
    log:
        f"{OUT}/logs/merge_embeddings.log",
    conda:
        "../../envs/embed.yaml"
    resources:
        **res("light"),
    params:
        compression=config["embedding"]["compression"],
    shell:
        "textvision merge-embeddings --dataset {input.dataset:q} --out {output:q}"
        " --compression {params.compression:q} {input.shards:q} > {log:q} 2>&1"
