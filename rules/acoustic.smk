# Acoustic features per corpus: eGeMAPSv02 descriptors and MFCCs on the model frame grid.
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
        mem_mb=lambda wildcards, threads: 1000 + 300 * threads,
        runtime=120,
    params:
        groups=config["acoustic"]["groups"],
        conv_kernel=config["acoustic"]["conv_kernel"],
        conv_stride=config["acoustic"]["conv_stride"],
    script:
        "../workflow_scripts/extract_acoustic.py"
