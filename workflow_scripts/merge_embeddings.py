from paraprobe.embeddings import merge_shards
from paraprobe.progress import setup_job_logging

merge_shards(
    snakemake.input.parts,
    snakemake.input.manifest,
    snakemake.output.embeddings,
    logger=setup_job_logging(snakemake.log[0]),
)
