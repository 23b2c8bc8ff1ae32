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
    threads: 8
    resources:
        **res("train"),
        gpu=GPU,
    params:
        outdir=lambda wildcards, output: Path(output.metrics).parent,
        weights=lambda wc: weights_for(config, wc.backbone),
        lr_head=lambda wc: learning_rates(config, wc.backbone)[0],
        lr_classifier=lambda wc: learning_rates(config, wc.backbone)[1],
        epochs=config["training"]["epochs"],
        batch_size=config["training"]["batch_size"],
        upsample=config["training"]["upsample"],
        normalization=config["training"]["normalization"],
        cache_features_mb=config["training"]["cache_features_mb"],
        device=config["device"],
    shell:
        "textvision train --images {input.images:q} --outdir {params.outdir:q}"
        " --backbone {wildcards.backbone:q} --weights {params.weights:q}"
        " --lr-head {params.lr_head:q} --lr-classifier {params.lr_classifier:q}"
        " --epochs {params.epochs:q} --batch-size {params.batch_size:q} --seed {wildcards.seed:q}"
        " --upsample {params.upsample:q} --normalization {params.normalization:q}"
        " --cache-features-mb {params.cache_features_mb:q} --device {params.device:q}"
        " --threads {threads} > {log:q} 2>&1"


rule baseline_logreg:
    input:
        f"{OUT}/embeddings/embeddings.h5",
    output:
        f"{OUT}/baselines/logreg/metrics.json",
    log:
        f"{OUT}/logs/baseline_logreg.log",
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        **res("light"),
    shell:
        "textvision baseline --embeddings {input:q} --out {output:q} --threads {threads}"
        " > {log:q} 2>&1"
