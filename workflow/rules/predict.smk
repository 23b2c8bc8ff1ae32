from pathlib import Path

from textvision.config.settings import PredictSettings, step_params


rule predict_texts:
    input:
        bundle=model_bundle,
        source=lambda wildcards: config["predict"]["source"],
    output:
        update(f"{OUT}/predict/{{model}}/predictions.csv"),
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
        settings=step_params(PredictSettings, config),
    shell:
        "textvision predict --model {params.model:q} --input {input.source:q} --out {output:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
