from textvision.config.settings import PrefetchSettings, step_params


rule prefetch:
    output:
        touch(f"{OUT}/logs/prefetch.done"),
    log:
        f"{OUT}/logs/prefetch.log",
    conda:
        "../../envs/prefetch.yaml"
    params:
        settings=step_params(PrefetchSettings, config),
    shell:
        "textvision prefetch --settings {params.settings:q} > {log:q} 2>&1"
