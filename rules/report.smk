# The study side by side with the published numbers (shown in report.html).


rule paper_comparison:
    input:
        probe_ua=f"{OUTDIR}/tables/probe_ua.tsv",
        layers=[
            f"{OUTDIR}/{corpus}/similarity/{model}/layers.tsv"
            for corpus in CORPORA
            for model in MODELS
        ],
    output:
        ua=f"{OUTDIR}/tables/paper_comparison_ua.tsv",
        cca=f"{OUTDIR}/tables/paper_comparison_cca.tsv",
        markdown=report(
            f"{OUTDIR}/tables/paper_comparison.md",
            caption="../report/paper_comparison.rst",
            category="Paper comparison",
        ),
    log:
        f"{OUTDIR}/logs/paper_comparison.log",
    conda:
        "../envs/paraprobe.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        corpora=config["corpora"],
        models=config["models"],
        pairs=[(corpus, model) for corpus in CORPORA for model in MODELS],
        method="cca",
        similarity_methods=config["similarity"]["methods"],
        probe_settings={corpus: corpus_probe_settings(corpus) for corpus in CORPORA},
        num_seeds=len(config["probe"]["seeds"]),
    script:
        "../workflow_scripts/paper_comparison.py"
