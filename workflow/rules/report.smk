from pathlib import Path

from textvision.config.settings import ReportSettings, step_params
from textvision.core.registry import REPORT_DOMAIN_FIGURE, REPORT_FIGURES, png


rule report:
    input:
        metrics=metrics_files(),
        predictions=predictions_files(),
        dataset=f"{OUT}/data/dataset.parquet",
        embeddings=f"{OUT}/embeddings/embeddings.h5",
        mapping=f"{OUT}/deepinsight/mapping.h5",
        layouts=variant_mappings(),
        domain=domain_results(),
        explain=explain_reported(),
    output:
        **{
            fig: update(
                report(
                    f"{OUT}/report/{png(fig)}",
                    caption=f"../report/{fig}.rst",
                    category="Results",
                )
            )
            for fig in REPORT_FIGURES
        },
        domain_shift=update(
            report(
                f"{OUT}/report/{png(REPORT_DOMAIN_FIGURE)}",
                caption=f"../report/{REPORT_DOMAIN_FIGURE}.rst",
                category="Domain shift",
            )
        ),
        csv=update(f"{OUT}/report/results.csv"),
        comparisons_csv=update(f"{OUT}/report/comparisons.csv"),
        md=update(
            report(
                f"{OUT}/report/results.md",
                caption="../report/results.rst",
                category="Results",
            )
        ),
    log:
        f"{OUT}/logs/report.log",
    benchmark:
        f"{OUT}/benchmarks/report/report.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        **res("light"),
    params:
        outdir=lambda wildcards, output: Path(output[0]).parent,
        settings=step_params(ReportSettings, config),
        # read, not inputs: a job's timing is no reason to redo the report or the job
        benchmarks=benchmark_files(),
    shell:
        "textvision report --dataset {input.dataset:q} --embeddings {input.embeddings:q}"
        " --mapping {input.mapping:q} --layouts {input.layouts:q} --domain {input.domain:q}"
        " --benchmarks {params.benchmarks:q} --explain {input.explain:q}"
        " --outdir {params.outdir:q} --settings {params.settings:q} {input.metrics:q}"
        " --threads {threads} > {log:q} 2>&1"
