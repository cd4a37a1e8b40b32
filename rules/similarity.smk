# Representation similarity (experiments 2-5): one job per (corpus, model) computes its four
# tables from one streamed pass over the frames; aggregation rules draw Fig. 2-5 and Table 3.
from functools import partial

SIMILARITY_TABLE = f"{OUTDIR}/{{corpus}}/similarity/{{model}}/{{analysis}}.tsv"
# Each similarity table, with the report category of the figure it feeds.
SIMILARITY_TABLE_CATEGORIES = {
    "features": "Feature similarity",
    "layers": "Layer similarity",
    "hierarchy": "Hierarchy",
    "emotion": "Emotion",
}
SIMILARITY_FIGURES = [
    "fig2_feature_cca",
    "fig3_layer_cca",
    "fig4_hierarchy",
    "fig5_emotion_cca",
]
# The aggregation rules read every (corpus, model) in this order, and name each table's pair.
SIMILARITY_CORPORA = [corpus for corpus in CORPORA for model in MODELS]
SIMILARITY_MODELS = [model for corpus in CORPORA for model in MODELS]

# Planning throughput of a (corpus, model) job, audio seconds per second per BLAS thread,
# for a 12-layer model: the demo's job (5 hidden states of 256 dimensions, held-out on)
# ran at 37 audio s/s on 2 threads; a base model's 13 x 768 has about (13/5)^2 x 3^2 = 61
# times the products, about 0.3 audio s/s per thread; planned at half that. The cost grows
# with the number of hidden-state pairs. Plus a few minutes to load and derive.
SIMILARITY_RATE_PER_THREAD = 0.15
SIMILARITY_OVERHEAD_MINUTES = 10
# On a GPU (similarity.device: cuda) the products run at least this many times faster than
# on the job's CPU threads (README: about 2 min against 25 on 2 cores), planned low too.
SIMILARITY_GPU_SPEEDUP = 10

# The stage's final files for `rule all` (a partial, not a def: snakemake --lint wants
# functions out of rule files).
similarity_targets = partial(
    expand,
    [
        f"{OUTDIR}/figures/{{figure}}.png",
        f"{OUTDIR}/figures/{{figure}}.svg",
        f"{OUTDIR}/tables/table3_layer_cca.tsv",
        f"{OUTDIR}/tables/table3_layer_cca.md",
    ],
    figure=SIMILARITY_FIGURES,
)


rule similarity:
    input:
        embeddings=f"{OUTDIR}/{{corpus}}/embeddings/{{model}}.h5",
        egemaps=f"{OUTDIR}/{{corpus}}/acoustic/egemaps.h5",
        mfcc=f"{OUTDIR}/{{corpus}}/acoustic/mfcc.h5",
        manifest=f"{OUTDIR}/{{corpus}}/manifest.tsv",
    output:
        **{
            analysis: report(
                SIMILARITY_TABLE.replace("{analysis}", analysis),
                caption="../report/similarity_tables.rst",
                category=category,
                subcategory="Values per corpus and model",
                labels={"corpus": "{corpus}", "model": "{model}", "table": analysis},
            )
            for analysis, category in SIMILARITY_TABLE_CATEGORIES.items()
        },
    log:
        f"{OUTDIR}/logs/similarity/{{corpus}}/{{model}}.log",
    benchmark:
        f"{OUTDIR}/benchmarks/similarity/{{corpus}}/{{model}}.tsv"
    conda:
        "../envs/similarity.yaml"
    threads: config["similarity"]["threads"]
    resources:
        # 12 layers x 768 dims + 40 acoustic columns: about 2.5 GB, 5 GB with held-out.
        mem_mb=memory_per_attempt(8000),
        runtime=runtime_from_audio(
            lambda wildcards, threads: SIMILARITY_RATE_PER_THREAD
            * threads
            * (
                SIMILARITY_GPU_SPEEDUP
                if gpus_requested(config["similarity"]["device"])
                else 1
            )
            * (13 / (model_num_layers(wildcards.model) + 1)) ** 2,
            SIMILARITY_OVERHEAD_MINUTES,
            audio_share=frame_subset_share,
        ),
        gpu=gpus_requested(config["similarity"]["device"]),
    params:
        # Not `threads`: how fast, not what (as for every stage's threads), so no rerun.
        settings={
            key: value
            for key, value in config["similarity"].items()
            if key != "threads"
        },
        groups=config["acoustic"]["groups"],
    script:
        "../workflow_scripts/similarity.py"


rule similarity_fig2:
    input:
        tables=expand(
            SIMILARITY_TABLE, corpus=CORPORA, model=MODELS, analysis="features"
        ),
    output:
        png=report(
            f"{OUTDIR}/figures/fig2_feature_cca.png",
            caption="../report/fig2_feature_cca.rst",
            category="Feature similarity",
        ),
        svg=f"{OUTDIR}/figures/fig2_feature_cca.svg",
    log:
        f"{OUTDIR}/logs/similarity_figures/fig2_feature_cca.log",
    conda:
        "../envs/similarity.yaml"
    params:
        figure="fig2_feature_cca",
        corpora=SIMILARITY_CORPORA,
        models=SIMILARITY_MODELS,
        method=config["similarity"]["methods"][0],
    script:
        "../workflow_scripts/similarity_figure.py"


rule similarity_fig3:
    input:
        tables=expand(SIMILARITY_TABLE, corpus=CORPORA, model=MODELS, analysis="layers"),
    output:
        png=report(
            f"{OUTDIR}/figures/fig3_layer_cca.png",
            caption="../report/fig3_layer_cca.rst",
            category="Layer similarity",
        ),
        svg=f"{OUTDIR}/figures/fig3_layer_cca.svg",
    log:
        f"{OUTDIR}/logs/similarity_figures/fig3_layer_cca.log",
    conda:
        "../envs/similarity.yaml"
    params:
        figure="fig3_layer_cca",
        corpora=SIMILARITY_CORPORA,
        models=SIMILARITY_MODELS,
        method=config["similarity"]["methods"][0],
    script:
        "../workflow_scripts/similarity_figure.py"


rule similarity_fig4:
    input:
        tables=expand(
            SIMILARITY_TABLE, corpus=CORPORA, model=MODELS, analysis="hierarchy"
        ),
    output:
        png=report(
            f"{OUTDIR}/figures/fig4_hierarchy.png",
            caption="../report/fig4_hierarchy.rst",
            category="Hierarchy",
        ),
        svg=f"{OUTDIR}/figures/fig4_hierarchy.svg",
    log:
        f"{OUTDIR}/logs/similarity_figures/fig4_hierarchy.log",
    conda:
        "../envs/similarity.yaml"
    params:
        figure="fig4_hierarchy",
        corpora=SIMILARITY_CORPORA,
        models=SIMILARITY_MODELS,
        method=config["similarity"]["methods"][0],
        reference_group=config["similarity"]["reference_group"],
    script:
        "../workflow_scripts/similarity_figure.py"


rule similarity_fig5:
    input:
        tables=expand(
            SIMILARITY_TABLE, corpus=CORPORA, model=MODELS, analysis="emotion"
        ),
    output:
        png=report(
            f"{OUTDIR}/figures/fig5_emotion_cca.png",
            caption="../report/fig5_emotion_cca.rst",
            category="Emotion",
        ),
        svg=f"{OUTDIR}/figures/fig5_emotion_cca.svg",
    log:
        f"{OUTDIR}/logs/similarity_figures/fig5_emotion_cca.log",
    conda:
        "../envs/similarity.yaml"
    params:
        figure="fig5_emotion_cca",
        corpora=SIMILARITY_CORPORA,
        models=SIMILARITY_MODELS,
        method=config["similarity"]["methods"][0],
        reference_group=config["similarity"]["reference_group"],
    script:
        "../workflow_scripts/similarity_figure.py"


rule similarity_table3:
    input:
        tables=expand(SIMILARITY_TABLE, corpus=CORPORA, model=MODELS, analysis="layers"),
    output:
        tsv=report(
            f"{OUTDIR}/tables/table3_layer_cca.tsv",
            caption="../report/table3_layer_cca.rst",
            category="Layer similarity",
        ),
        markdown=f"{OUTDIR}/tables/table3_layer_cca.md",
    log:
        f"{OUTDIR}/logs/similarity_figures/table3_layer_cca.log",
    conda:
        "../envs/similarity.yaml"
    params:
        corpora=SIMILARITY_CORPORA,
        models=SIMILARITY_MODELS,
    script:
        "../workflow_scripts/similarity_table3.py"
