"""Every fold JSON -> the per-run table and tables/probe_ua.tsv (rule probe_summary)."""

from paraprobe.probe.report import write_probe_summary
from paraprobe.progress import setup_job_logging

setup_job_logging(snakemake.log[0])
write_probe_summary(snakemake.input, snakemake.output.runs, snakemake.output.summary)
