rule fit_mapping:
    input:
        f"{OUT}/embeddings/embeddings.h5",
    output:
        f"{OUT}/deepinsight/mapping.h5",
    log:
        f"{OUT}/logs/fit_mapping.log",
    conda:
        "../../envs/deepinsight.yaml"
    threads: 8
    resources:
        **res("deepinsight"),
    params:
        fit_on=config["deepinsight"]["fit_on"],
        pixels=config["deepinsight"]["pixels"],
        scaler=config["deepinsight"]["scaler"],
        projector=config["deepinsight"]["projector"],
        pca_components=config["deepinsight"]["pca_components"] or "",
        discretization=config["deepinsight"]["discretization"],
        empty_value=config["deepinsight"]["empty_value"],
        chunk_size=config["deepinsight"]["chunk_size"],
        perplexity=config["deepinsight"]["tsne"]["perplexity"],
        metric=config["deepinsight"]["tsne"]["metric"],
        init=config["deepinsight"]["tsne"]["init"],
        learning_rate=config["deepinsight"]["tsne"]["learning_rate"],
        max_iter=config["deepinsight"]["tsne"]["max_iter"],
        backend=config["deepinsight"]["tsne"]["backend"],
        seed=config["deepinsight"]["tsne"]["seed"],
    shell:
        "textvision fit-mapping --embeddings {input:q} --out {output:q} --fit-on {params.fit_on:q}"
        " --pixels {params.pixels:q} --scaler {params.scaler:q} --projector {params.projector:q}"
        " --pca-components={params.pca_components:q} --discretization {params.discretization:q}"
        " --empty-value {params.empty_value:q} --chunk-size {params.chunk_size:q}"
        " --perplexity {params.perplexity:q} --metric {params.metric:q} --init {params.init:q}"
        " --learning-rate {params.learning_rate:q} --max-iter {params.max_iter:q}"
        " --backend {params.backend:q} --seed {params.seed:q} --threads {threads}"
        " > {log:q} 2>&1"


rule render_images:
    input:
        embeddings=f"{OUT}/embeddings/embeddings.h5",
        mapping=f"{OUT}/deepinsight/mapping.h5",
    output:
        f"{OUT}/images/images.h5",
    log:
        f"{OUT}/logs/render_images.log",
    conda:
        "../../envs/deepinsight.yaml"
    resources:
        **res("deepinsight"),
    shell:
        "textvision render-images --embeddings {input.embeddings:q} --mapping {input.mapping:q}"
        " --out {output:q} > {log:q} 2>&1"


rule plot_mapping:
    input:
        mapping=f"{OUT}/deepinsight/mapping.h5",
        images=f"{OUT}/images/images.h5",
    output:
        **{
            fig: report(
                f"{OUT}/deepinsight/{fig}.png",
                caption=f"../report/{fig}.rst",
                category="DeepInsight",
            )
            for fig in DEEPINSIGHT_FIGURES
        },
    log:
        f"{OUT}/logs/plot_mapping.log",
    conda:
        "../../envs/report.yaml"
    resources:
        **res("light"),
    params:
        outdir=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "textvision plot-mapping --mapping {input.mapping:q} --images {input.images:q}"
        " --outdir {params.outdir:q} > {log:q} 2>&1"
