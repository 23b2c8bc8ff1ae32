# predict.smk's input functions and lists of files.
def predict_files():
    """The predictions of every model of `predict.models` (empty: every model trained)."""
    return expand(rules.predict_texts.output[0], model=chosen_models("predict"))


def predict_targets(wildcards):
    """The predictions of `snakemake predict`; `predict.source` must be set."""
    if not config["predict"]["source"]:
        raise ValueError(
            "config key 'predict.source' is null: set the texts to classify, e.g. "
            '--config \'predict={"source": "reviews.csv"}\''
        )
    return predict_files()


def model_bundle(wildcards):
    """The bundle `predict_texts` classifies with."""
    return bundle_of(wildcards.model)
