# Corpora in, manifests out.


rule synthesize_corpus:
    output:
        directory(f"{OUTDIR}/{{corpus}}/audio"),
    log:
        f"{OUTDIR}/logs/synthesize_corpus/{{corpus}}.log",
    conda:
        "../envs/paraprobe.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        # One dict, not three numbers: Snakemake compares params as an unnamed set of values,
        # so seed 2 -> 4 beside actors 4 and repetitions 2 would go unseen.
        synthesis=lambda w: {
            key: corpus_config(w.corpus)[key]
            for key in ("seed", "actors", "repetitions")
        },
    script:
        "../workflow_scripts/synthesize_corpus.py"


rule build_manifest:
    input:
        unpack(corpus_inputs),
    output:
        manifest=f"{OUTDIR}/{{corpus}}/manifest.tsv",
        excluded=f"{OUTDIR}/{{corpus}}/excluded.tsv",
    log:
        f"{OUTDIR}/logs/build_manifest/{{corpus}}.log",
    benchmark:
        f"{OUTDIR}/benchmarks/build_manifest/{{corpus}}.tsv"
    conda:
        "../envs/paraprobe.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        corpus=lambda w: corpus_config(w.corpus),
        audio_root=lambda w: synthetic_audio_root(OUTDIR, w.corpus),
    script:
        "../workflow_scripts/build_manifest.py"
