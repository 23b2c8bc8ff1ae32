from pathlib import Path

from textvision.config.settings import ExplainSettings, step_params
from textvision.config.variants import BASELINE
from textvision.core.registry import EXPLAIN_FIGURES, png


rule explain_backbone:
    input:
        bundle=backbone_bundle,
        dataset=f"{OUT}/data/dataset.parquet",
    output:
        index=update(f"{OUT}/explain/{{backbone}}/index.html"),
        features=update(f"{OUT}/explain/{{backbone}}/features.csv"),
        figures=[
            update(f"{OUT}/explain/{{backbone}}/{png(fig)}") for fig in EXPLAIN_FIGURES
        ],
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
        settings=step_params(ExplainSettings, config),
    shell:
        "textvision explain --model {params.model:q} --dataset {input.dataset:q} --out {params.outdir:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


use rule explain_backbone as explain_logreg with:
    input:
        bundle=bundle_of(BASELINE),
        dataset=f"{OUT}/data/dataset.parquet",
    output:
        index=update(f"{OUT}/explain/logreg/index.html"),
    log:
        f"{OUT}/logs/explain/logreg.log",
    benchmark:
        f"{OUT}/benchmarks/explain_logreg/logreg.tsv"
