# Probing: one job per (corpus, model, fold) trains every input's probe; then tables and figures.


include: "probes_helpers.smk"


# The inputs, hence a fold job's outputs, depend on the model's layer count: one rule per count.
for _num_layers, _models in models_by_num_layers().items():

    rule:
        name:
            f"probe_fold_{_num_layers}_layers"
        input:
            manifest=manifest_path("{corpus}"),
            embeddings=f"{OUTDIR}/{{corpus}}/embeddings/{{model}}.h5",
        output:
            fold_jsons=expand(
                f"{PROBES}/{{input}}/fold{{fold}}.json",
                input=probe_input_names(_num_layers),
                allow_missing=True,
            ),
            layer_weights=f"{PROBES}/{WEIGHTED_AVERAGE}/fold{{fold}}_layer_weights.tsv",
        log:
            f"{OUTDIR}/logs/probe_fold/{{corpus}}/{{model}}/fold{{fold}}.log",
        benchmark:
            f"{OUTDIR}/benchmarks/probe_fold/{{corpus}}/{{model}}/fold{{fold}}.tsv"
        wildcard_constraints:
            model="|".join(map(re.escape, _models)),
            fold=r"\d+",
        conda:
            "../envs/probe.yaml"
        threads: config["probe"]["threads"]
        resources:
            mem_mb=memory_per_attempt(probe_fold_mem_mb),
            runtime=240,
            gpu=gpus_requested(config["probe"]["device"]),
        params:
            inputs=probe_input_names(_num_layers),
            settings=lambda wildcards: corpus_probe_settings(wildcards.corpus),
            seeds=config["probe"]["seeds"],
            validation_share=config["probe"]["validation_share"],
            device=config["probe"]["device"],
        script:
            "../workflow_scripts/probe_fold.py"


rule probe_summary:
    input:
        [probe_fold_jsons(corpus, model) for corpus in CORPORA for model in MODELS],
    output:
        runs=f"{OUTDIR}/tables/probe_runs.tsv",
        summary=report(
            f"{OUTDIR}/tables/probe_ua.tsv",
            caption="../report/probe_ua.rst",
            category="Probing",
        ),
    log:
        f"{OUTDIR}/logs/probe_summary.log",
    conda:
        "../envs/probe.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/probe_summary.py"


rule probe_table1:
    input:
        f"{OUTDIR}/tables/probe_ua.tsv",
    output:
        tsv=f"{OUTDIR}/tables/table1_probe_ua.tsv",
        markdown=report(
            f"{OUTDIR}/tables/table1_probe_ua.md",
            caption="../report/probe_table1.rst",
            category="Probing",
        ),
    log:
        f"{OUTDIR}/logs/probe_table1.log",
    conda:
        "../envs/probe.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/probe_table1.py"


rule probe_figure:
    input:
        f"{OUTDIR}/tables/probe_runs.tsv",
    output:
        png=report(
            f"{OUTDIR}/figures/fig1_probe_ua.png",
            caption="../report/probe_fig1.rst",
            category="Probing",
        ),
        svg=f"{OUTDIR}/figures/fig1_probe_ua.svg",
    log:
        f"{OUTDIR}/logs/probe_figure.log",
    conda:
        "../envs/probe.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/probe_figure.py"


rule probe_layer_weights:
    input:
        [
            probe_layer_weight_tables(corpus, model)
            for corpus in CORPORA
            for model in MODELS
        ],
    output:
        table=f"{OUTDIR}/tables/probe_layer_weights.tsv",
        png=report(
            f"{OUTDIR}/figures/probe_layer_weights.png",
            caption="../report/probe_layer_weights.rst",
            category="Probing",
        ),
        svg=f"{OUTDIR}/figures/probe_layer_weights.svg",
    log:
        f"{OUTDIR}/logs/probe_layer_weights.log",
    conda:
        "../envs/probe.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/probe_layer_weights.py"
