#!/usr/bin/env bash
# Reproduces docs/results.md: the real IMDB run (config/imdb.yaml) and its four variants, which
# reuse the main run's dataset, embeddings (and, where DeepInsight is unchanged, images) through
# hard links, then stacks the variants' tables with the main one. Needs ../shared/data/imdb.parquet
# and ../shared/weights/resnet18_imagenet_conv1_to_layer3.pt. About 55 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
main=results/imdb
snakemake --configfile config/imdb.yaml --cores 2

variant() {  # name, folders to share, training settings (JSON), further --config overrides
    local name=$1 shared=$2 training=$3
    shift 3
    mkdir -p "results/imdb-$name"
    for dir in $shared; do
        [ -e "results/imdb-$name/$dir" ] || cp -al "$main/$dir" "results/imdb-$name/$dir"
    done
    snakemake --configfile config/imdb.yaml --cores 2 --config "outdir=results/imdb-$name" \
        "training=$training" 'baseline={"enabled":false}' "$@"
}
one='"backbones":["resnet18@layer1"]'
variant scalar "data embeddings deepinsight images" "{$one,\"normalization\":\"train\"}"
variant leak "data embeddings" "{$one}" 'deepinsight={"fit_on":"all"}'
variant assignment "data embeddings" "{$one}" 'deepinsight={"discretization":"assignment"}'
random='"weights":{"resnet18@layer1":"none"}'
variant random "data embeddings deepinsight images" "{$one,$random}"

cp "$main/report/results.csv" docs/results.csv
textvision compare --out docs/variants.csv \
    "main (fit on train, bin, per-pixel norm)=$main/report/results.csv" \
    "scalar normalisation (the paper's)=results/imdb-scalar/report/results.csv" \
    "DeepInsight fitted on all rows (the original code's leak)=results/imdb-leak/report/results.csv" \
    "assignment discretisation=results/imdb-assignment/report/results.csv" \
    "random weights (no transfer)=results/imdb-random/report/results.csv"
for fig in accuracy learning_curves confusion; do cp "$main/report/$fig.png" "docs/$fig.png"; done
for fig in feature_density class_means samples feature_map; do
    cp "$main/deepinsight/$fig.png" "docs/$fig.png"
done
