rule prepare_data:
    input:
        source_input,
    output:
        f"{OUT}/data/dataset.parquet",
    log:
        f"{OUT}/logs/prepare_data.log",
    conda:
        "../../envs/data.yaml"
    resources:
        **res("light"),
    params:
        source=config["data"]["source"],
        text_column=config["data"]["text_column"],
        label_column=config["data"]["label_column"],
        id_column=config["data"]["id_column"] or "",
        n_per_class=config["data"]["n_per_class"] or "",
        val=config["data"]["split"]["val"],
        test=config["data"]["split"]["test"],
        seed=config["data"]["split"]["seed"],
        clean_html="--clean-html" if config["data"]["clean_html"] else "--no-clean-html",
        synthetic=json.dumps(config["data"]["synthetic"], sort_keys=True),
    shell:
        "textvision prepare-data --source {params.source:q} --out {output:q}"
        " --text-column {params.text_column:q} --label-column {params.label_column:q}"
        " --id-column={params.id_column:q} --n-per-class={params.n_per_class:q}"
        " --val {params.val:q} --test {params.test:q} --seed {params.seed:q}"
        " {params.clean_html:q} --synthetic {params.synthetic:q} > {log:q} 2>&1"


rule prefetch:
    output:
        touch(f"{OUT}/logs/prefetch.done"),
    log:
        f"{OUT}/logs/prefetch.log",
    conda:
        "../../envs/data.yaml"
    params:
        model=config["embedding"]["model"],
        dataset=config["data"]["source"],
        backbones=[b for b in BACKBONES if weights_for(config, b) == "imagenet"],
    shell:
        "textvision prefetch --model {params.model:q} --dataset {params.dataset:q}"
        " --backbone {params.backbones:q} > {log:q} 2>&1"
