from paraprobe.manifest import write_manifest
from paraprobe.progress import setup_job_logging

write_manifest(
    snakemake.params.corpus,
    snakemake.output.manifest,
    snakemake.output.excluded,
    audio_root=snakemake.params.audio_root,
    threads=snakemake.threads,
    logger=setup_job_logging(snakemake.log[0]),
)
