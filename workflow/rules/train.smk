rule train:
    input:
        images=f"{OUT}/images/images.h5",
        weights=weights_input,
    output:
        metrics=f"{OUT}/train/{{backbone}}/seed{{seed}}/metrics.json",
        model=f"{OUT}/train/{{backbone}}/seed{{seed}}/model.pt",
        history=f"{OUT}/train/{{backbone}}/seed{{seed}}/history.csv",
        curve=f"{OUT}/train/{{backbone}}/seed{{seed}}/learning_curve.png",
    log:
        f"{OUT}/logs/train/{{backbone}}/seed{{seed}}.log",
    conda:
        "../../envs/train.yaml"
    threads: config["training"]["threads"]
    resources:
        **res("train"),
        gpu=GPU,
    params:
        outdir=lambda wildcards, output: Path(output.metrics).parent,
        settings=train_params,
    shell:
        "textvision train --images {input.images:q} --outdir {params.outdir:q}"
        " --backbone {wildcards.backbone:q} --seed {wildcards.seed:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule baseline_logreg:
    input:
        f"{OUT}/embeddings/embeddings.h5",
    output:
        f"{OUT}/baselines/logreg/metrics.json",
    log:
        f"{OUT}/logs/baseline_logreg.log",
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        **res("light"),
    params:
        settings=step_params(BaselineSettings, config),
    shell:
        "textvision baseline --embeddings {input:q} --out {output:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
