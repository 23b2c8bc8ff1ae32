from textvision.config.settings import DataSettings, step_params


rule prepare_data:
    input:
        source_input,
    output:
        update(f"{OUT}/data/dataset.parquet"),
    log:
        f"{OUT}/logs/prepare_data.log",
    benchmark:
        f"{OUT}/benchmarks/prepare_data/prepare_data.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        **res("light"),
    params:
        settings=step_params(DataSettings, config),
    shell:
        "textvision prepare-data --out {output:q} --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
