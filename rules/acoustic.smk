# Acoustic features per corpus: eGeMAPSv02 descriptors and MFCCs on the model frame grid.

# Planning throughput, audio seconds per second per worker: the demo's extraction ran at
# about 40 audio s/s per CPU second on the 2-core CI machine (bench/acoustic.py measures
# the same); planned four times lower, plus a few minutes to start.
ACOUSTIC_RATE_PER_THREAD = 10.0
ACOUSTIC_OVERHEAD_MINUTES = 5


rule extract_acoustic:
    input:
        manifest=f"{OUTDIR}/{{corpus}}/manifest.tsv",
    output:
        egemaps=f"{OUTDIR}/{{corpus}}/acoustic/egemaps.h5",
        mfcc=f"{OUTDIR}/{{corpus}}/acoustic/mfcc.h5",
    log:
        f"{OUTDIR}/logs/extract_acoustic/{{corpus}}.log",
    benchmark:
        f"{OUTDIR}/benchmarks/extract_acoustic/{{corpus}}.tsv"
    conda:
        "../envs/acoustic.yaml"
    threads: config["acoustic"]["threads"]
    resources:
        mem_mb=memory_per_attempt(
            lambda wildcards, input, threads: 1000 + 300 * threads
        ),
        runtime=runtime_from_audio(
            lambda wildcards, threads: ACOUSTIC_RATE_PER_THREAD * threads,
            ACOUSTIC_OVERHEAD_MINUTES,
        ),
    # No acoustic.groups here: they select columns for the similarity jobs only, so
    # changing them must not recompute the features.
    params:
        conv_kernel=config["acoustic"]["conv_kernel"],
        conv_stride=config["acoustic"]["conv_stride"],
    script:
        "../workflow_scripts/extract_acoustic.py"
