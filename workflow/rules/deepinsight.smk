from pathlib import Path

from textvision.config.settings import MappingSettings, step_params
from textvision.core.registry import DEEPINSIGHT_FIGURES, png


rule fit_mapping:
    input:
        f"{OUT}/embeddings/embeddings.h5",
    output:
        update(f"{OUT}/deepinsight/mapping.h5"),
    log:
        f"{OUT}/logs/fit_mapping.log",
    benchmark:
        f"{OUT}/benchmarks/fit_mapping/fit_mapping.tsv"
    conda:
        "../../envs/deepinsight.yaml"
    threads: 8
    resources:
        **res("deepinsight"),
    params:
        settings=step_params(MappingSettings, config),
    shell:
        "textvision fit-mapping --embeddings {input:q} --out {output:q}"
        " --settings {params.settings:q} --threads {threads} > {log:q} 2>&1"


rule render_images:
    input:
        embeddings=f"{OUT}/embeddings/embeddings.h5",
        mapping=f"{OUT}/deepinsight/mapping.h5",
    output:
        update(f"{OUT}/images/images.h5"),
    log:
        f"{OUT}/logs/render_images.log",
    benchmark:
        f"{OUT}/benchmarks/render_images/render_images.tsv"
    conda:
        "../../envs/deepinsight.yaml"
    threads: 8
    resources:
        **res("deepinsight"),
    shell:
        "textvision render-images --embeddings {input.embeddings:q} --mapping {input.mapping:q}"
        " --out {output:q} --threads {threads} > {log:q} 2>&1"


use rule fit_mapping as fit_mapping_variant with:
    output:
        update(f"{OUT}/variants/{{variant}}/deepinsight/mapping.h5"),
    log:
        f"{OUT}/logs/variants/{{variant}}/fit_mapping.log",
    benchmark:
        f"{OUT}/benchmarks/fit_mapping_variant/{{variant}}.tsv"
    params:
        settings=lambda wildcards: step_params(
            MappingSettings, VARIANTS[wildcards.variant]
        ),


use rule render_images as render_images_variant with:
    input:
        embeddings=f"{OUT}/embeddings/embeddings.h5",
        mapping=f"{OUT}/variants/{{variant}}/deepinsight/mapping.h5",
    output:
        update(f"{OUT}/variants/{{variant}}/images/images.h5"),
    log:
        f"{OUT}/logs/variants/{{variant}}/render_images.log",
    benchmark:
        f"{OUT}/benchmarks/render_images_variant/{{variant}}.tsv"


rule plot_mapping:
    input:
        mapping=f"{OUT}/deepinsight/mapping.h5",
        images=f"{OUT}/images/images.h5",
    output:
        **{
            fig: update(
                report(
                    f"{OUT}/deepinsight/{png(fig)}",
                    caption=f"../report/{fig}.rst",
                    category="DeepInsight",
                )
            )
            for fig in DEEPINSIGHT_FIGURES
        },
    log:
        f"{OUT}/logs/plot_mapping.log",
    benchmark:
        f"{OUT}/benchmarks/plot_mapping/plot_mapping.tsv"
    conda:
        "../../envs/deepinsight.yaml"
    threads: 1
    resources:
        **res("light"),
    params:
        outdir=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "textvision plot-mapping --mapping {input.mapping:q} --images {input.images:q}"
        " --outdir {params.outdir:q} --threads {threads} > {log:q} 2>&1"
