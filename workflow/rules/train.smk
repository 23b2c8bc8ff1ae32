from pathlib import Path

from textvision.config.settings import BaselineSettings, step_params
from textvision.core.registry import BUNDLE_FILES


rule train:
    input:
        images=f"{OUT}/images/images.h5",
        mapping=f"{OUT}/deepinsight/mapping.h5",
        weights=weights_input,
    output:
        metrics=update(f"{OUT}/train/{{backbone}}/seed{{seed}}/metrics.json"),
        bundle=[
            update(f)
            for f in multiext(
                f"{OUT}/train/{{backbone}}/seed{{seed}}/bundle/", *BUNDLE_FILES
            )
        ],
        predictions=update(f"{OUT}/train/{{backbone}}/seed{{seed}}/predictions.parquet"),
        model=update(f"{OUT}/train/{{backbone}}/seed{{seed}}/model.pt"),
        history=update(f"{OUT}/train/{{backbone}}/seed{{seed}}/history.csv"),
        curve=update(f"{OUT}/train/{{backbone}}/seed{{seed}}/learning_curve.png"),
    log:
        f"{OUT}/logs/train/{{backbone}}/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/train/{{backbone}}/seed{{seed}}.tsv"
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
        " --backbone {wildcards.backbone:q} --seed {wildcards.seed:q} --mapping {input.mapping:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


use rule train as train_variant with:
    input:
        unpack(variant_deepinsight),
        weights=variant_weights_input,
    output:
        metrics=update(
            f"{OUT}/variants/{{variant}}/train/{{backbone}}/seed{{seed}}/metrics.json"
        ),
        bundle=[
            update(f)
            for f in multiext(
                f"{OUT}/variants/{{variant}}/train/{{backbone}}/seed{{seed}}/bundle/",
                *BUNDLE_FILES,
            )
        ],
        predictions=update(
            f"{OUT}/variants/{{variant}}/train/{{backbone}}/seed{{seed}}/predictions.parquet"
        ),
        model=update(
            f"{OUT}/variants/{{variant}}/train/{{backbone}}/seed{{seed}}/model.pt"
        ),
        history=update(
            f"{OUT}/variants/{{variant}}/train/{{backbone}}/seed{{seed}}/history.csv"
        ),
        curve=update(
            f"{OUT}/variants/{{variant}}/train/{{backbone}}/seed{{seed}}/learning_curve.png"
        ),
    log:
        f"{OUT}/logs/variants/{{variant}}/train/{{backbone}}/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_variant/{{variant}}/{{backbone}}/seed{{seed}}.tsv"
    threads: lambda wildcards: VARIANTS[wildcards.variant]["training"]["threads"]
    params:
        outdir=lambda wildcards, output: Path(output.metrics).parent,
        settings=variant_train_params,


rule baseline_logreg:
    input:
        f"{OUT}/embeddings/embeddings.h5",
    output:
        metrics=update(f"{OUT}/baselines/logreg/metrics.json"),
        bundle=[
            update(f)
            for f in multiext(f"{OUT}/baselines/logreg/bundle/", *BUNDLE_FILES)
        ],
        predictions=update(f"{OUT}/baselines/logreg/predictions.parquet"),
    log:
        f"{OUT}/logs/baseline_logreg.log",
    benchmark:
        f"{OUT}/benchmarks/baseline_logreg/baseline_logreg.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        **res("light"),
    params:
        settings=step_params(BaselineSettings, config),
    shell:
        "textvision baseline --embeddings {input:q} --out {output.metrics:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
