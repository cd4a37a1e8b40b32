from paraprobe.acoustic import extract_acoustic
from paraprobe.progress import setup_job_logging

extract_acoustic(
    snakemake.input.manifest,
    {"egemaps": snakemake.output.egemaps, "mfcc": snakemake.output.mfcc},
    threads=snakemake.threads,
    conv_kernel=snakemake.params.conv_kernel,
    conv_stride=snakemake.params.conv_stride,
    logger=setup_job_logging(snakemake.log[0]),
)
