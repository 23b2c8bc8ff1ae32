from pathlib import Path

from textvision.core.registry import DOMAIN_FIGURES, png


rule domain_shift:
    input:
        images=f"{OUT}/images/images.h5",
        weights=weights_input,
        reference=reference_input,
    output:
        **{
            fig: update(
                report(
                    f"{OUT}/domain/{{backbone}}_{png(fig)}",
                    caption=f"../report/domain_{fig}.rst",
                    category="Domain shift",
                    subcategory="{backbone}",
                )
            )
            for fig in DOMAIN_FIGURES
        },
        json=update(f"{OUT}/domain/{{backbone}}.json"),
    log:
        f"{OUT}/logs/domain_shift/{{backbone}}.log",
    benchmark:
        f"{OUT}/benchmarks/domain_shift/{{backbone}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1  # mostly single-threaded (CPU time = wall time at 2 threads): jobs side by side
    resources:
        **res("train"),
        gpu=GPU,
    params:
        outdir=lambda wildcards, output: Path(output.json).parent,
        settings=domain_params,
    shell:
        "textvision domain-shift --images {input.images:q} --backbone {wildcards.backbone:q}"
        " --out-json {output.json:q} --outdir {params.outdir:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"
