"""Train every input's probe on one fold of one corpus and model (rule probe_fold_*)."""

from paraprobe.probe.crossval import run_probe_fold
from paraprobe.probe.settings import ProbeSettings
from paraprobe.progress import setup_job_logging

setup_job_logging(snakemake.log[0])
run_probe_fold(
    manifest_path=snakemake.input.manifest,
    embeddings_path=snakemake.input.embeddings,
    json_paths=dict(zip(snakemake.params.inputs, snakemake.output.fold_jsons, strict=True)),
    layer_weights_path=snakemake.output.layer_weights,
    corpus=snakemake.wildcards.corpus,
    model=snakemake.wildcards.model,
    fold=int(snakemake.wildcards.fold),
    settings=ProbeSettings(**snakemake.params.settings),
    seeds=snakemake.params.seeds,
    validation_share=snakemake.params.validation_share,
    device=snakemake.params.device,
    threads=snakemake.threads,
)
