# Layer embeddings per (corpus, model): every hidden state, pooled per utterance, and the
# frames of a subset. With extraction.shards > 1, shard jobs write parts that a merge joins.
from functools import partial

from paraprobe.extraction_planning import PLANNING_OVERHEAD_MINUTES, planning_rate

EXTRACTION = config["extraction"]
SHARDS = EXTRACTION["shards"]
EMBEDDINGS = f"{OUTDIR}/{{corpus}}/embeddings/{{model}}.h5"

# The stage's final files for `rule all` (a partial, not a def: snakemake --lint wants
# functions out of rule files).
embeddings_targets = partial(expand, EMBEDDINGS, corpus=CORPORA, model=MODELS)

# Resources of an extraction job; runtime from the manifest's total audio.
extraction_resources = dict(
    mem_mb=memory_per_attempt(EXTRACTION["mem_mb"]),
    runtime=runtime_from_audio(
        lambda wildcards, threads: planning_rate(
            model_num_layers(wildcards.model), EXTRACTION["device"], threads, SHARDS
        ),
        PLANNING_OVERHEAD_MINUTES,
    ),
    gpu=gpus_requested(EXTRACTION["device"]),
)


if SHARDS == 1:

    rule extract_embeddings:
        input:
            manifest=f"{OUTDIR}/{{corpus}}/manifest.tsv",
        output:
            # update(): the previous file survives until the job replaces it, so the
            # rows of unchanged utterances are copied, not recomputed.
            embeddings=update(EMBEDDINGS),
        log:
            f"{OUTDIR}/logs/extract_embeddings/{{corpus}}/{{model}}.log",
        benchmark:
            f"{OUTDIR}/benchmarks/extract_embeddings/{{corpus}}/{{model}}.tsv"
        conda:
            "../envs/embeddings.yaml"
        threads: EXTRACTION["threads"]
        resources:
            **extraction_resources,
        params:
            model=lambda wildcards: model_config(wildcards.model),
            batch_seconds=EXTRACTION["batch_seconds"],
            device=EXTRACTION["device"],
            half_precision=EXTRACTION["half_precision"],
            frames=EXTRACTION["frames"],
            shard=0,
            shards=SHARDS,
            previous=EMBEDDINGS,
        script:
            "../workflow_scripts/extract_embeddings.py"

else:

    rule extract_embeddings_shard:
        input:
            manifest=f"{OUTDIR}/{{corpus}}/manifest.tsv",
        output:
            part=temp(f"{OUTDIR}/{{corpus}}/embeddings/{{model}}.shard{{shard}}.h5"),
        log:
            f"{OUTDIR}/logs/extract_embeddings/{{corpus}}/{{model}}.shard{{shard}}.log",
        benchmark:
            f"{OUTDIR}/benchmarks/extract_embeddings/{{corpus}}/{{model}}.shard{{shard}}.tsv"
        wildcard_constraints:
            shard=r"\d+",
        conda:
            "../envs/embeddings.yaml"
        threads: EXTRACTION["threads"]
        resources:
            **extraction_resources,
        params:
            model=lambda wildcards: model_config(wildcards.model),
            batch_seconds=EXTRACTION["batch_seconds"],
            device=EXTRACTION["device"],
            half_precision=EXTRACTION["half_precision"],
            frames=EXTRACTION["frames"],
            shard=lambda wildcards: int(wildcards.shard),
            shards=SHARDS,
            # The last merged file, still in place while the shards run: its unchanged
            # rows are copied, not recomputed.
            previous=EMBEDDINGS,
        script:
            "../workflow_scripts/extract_embeddings.py"

    rule merge_embeddings:
        input:
            manifest=f"{OUTDIR}/{{corpus}}/manifest.tsv",
            parts=expand(
                f"{OUTDIR}/{{{{corpus}}}}/embeddings/{{{{model}}}}.shard{{shard}}.h5",
                shard=range(SHARDS),
            ),
        output:
            embeddings=EMBEDDINGS,
        log:
            f"{OUTDIR}/logs/merge_embeddings/{{corpus}}/{{model}}.log",
        benchmark:
            f"{OUTDIR}/benchmarks/merge_embeddings/{{corpus}}/{{model}}.tsv"
        conda:
            "../envs/embeddings.yaml"
        resources:
            mem_mb=2000,
            runtime=60,
        script:
            "../workflow_scripts/merge_embeddings.py"
