rule predict_texts:
    input:
        bundle=model_bundle,
        source=lambda wildcards: config["predict"]["source"],
    output:
        f"{OUT}/predict/{{model}}/predictions.csv",
    log:
        f"{OUT}/logs/predict/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/predict_texts/{{model}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        **res("train"),
        gpu=GPU,
    params:
        model=lambda wildcards, input: Path(input.bundle[0]).parent,
        text_column=config["predict"]["text_column"],
        id_column=config["predict"]["id_column"] or "",
        device=config["device"],
    shell:
        "textvision predict --model {params.model:q} --input {input.source:q} --out {output:q}"
        " --text-column {params.text_column:q} --id-column={params.id_column:q} --device {params.device:q}"
        " --threads {threads} > {log:q} 2>&1"
