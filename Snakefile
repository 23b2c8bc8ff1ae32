# textvision: classify text with pretrained vision models (Benarab, arXiv 2106.12479).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/prefetch.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/deepinsight.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/domain.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),


rule predict:
    input:
        predict_targets,


rule explain:
    input:
        explain_targets,
    localrule: True
