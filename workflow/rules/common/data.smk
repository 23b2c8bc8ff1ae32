# data.smk's input functions.
def source_input(wildcards):
    """The source file or folder, so that a changed input file reruns the data step."""
    source = config["data"]["source"]
    return [] if source == "synthetic" or source.startswith("hf:") else [source]
