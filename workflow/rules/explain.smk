rule explain_backbone:
    input:
        bundle=backbone_bundle,
        dataset=f"{OUT}/data/dataset.parquet",
    output:
        index=f"{OUT}/explain/{{backbone}}/index.html",
        features=f"{OUT}/explain/{{backbone}}/features.csv",
        figures=expand(
            f"{OUT}/explain/{{{{backbone}}}}/{{fig}}.png", fig=EXPLAIN_FIGURES
        ),
    log:
        f"{OUT}/logs/explain/{{backbone}}.log",
    benchmark:
        f"{OUT}/benchmarks/explain_backbone/{{backbone}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1  # the same bits whatever --cores is
    resources:
        **res("train"),
        gpu=GPU,
    params:
        model=lambda wildcards, input: Path(input.bundle[0]).parent,
        outdir=lambda wildcards, output: Path(output.index).parent,
        n_texts=config["explain"]["n_texts"],
        steps=config["explain"]["steps"],
        seed=config["explain"]["seed"],
        references=config["explain"]["references"],
        device=config["device"],
    shell:
        "textvision explain --model {params.model:q} --dataset {input.dataset:q} --out {params.outdir:q}"
        " --n-texts {params.n_texts:q} --steps {params.steps:q} --seed {params.seed:q}"
        " --references {params.references:q}"
        " --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule explain_logreg:
    input:
        bundle=expand(f"{OUT}/baselines/logreg/bundle/{{name}}", name=BUNDLE_FILES),
        dataset=f"{OUT}/data/dataset.parquet",
    output:
        index=f"{OUT}/explain/logreg/index.html",
    log:
        f"{OUT}/logs/explain/logreg.log",
    benchmark:
        f"{OUT}/benchmarks/explain_logreg/logreg.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1  # the same bits whatever --cores is
    resources:
        **res("train"),
        gpu=GPU,
    params:
        model=lambda wildcards, input: Path(input.bundle[0]).parent,
        outdir=lambda wildcards, output: Path(output.index).parent,
        n_texts=config["explain"]["n_texts"],
        steps=config["explain"]["steps"],
        seed=config["explain"]["seed"],
        references=config["explain"]["references"],
        device=config["device"],
    shell:
        "textvision explain --model {params.model:q} --dataset {input.dataset:q} --out {params.outdir:q}"
        " --n-texts {params.n_texts:q} --steps {params.steps:q} --seed {params.seed:q}"
        " --references {params.references:q}"
        " --device {params.device:q} --threads {threads} > {log:q} 2>&1"
