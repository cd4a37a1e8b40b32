"""tables/probe_ua.tsv -> the paper's Table 1 as TSV and Markdown (rule probe_table1)."""

from paraprobe.probe.report import write_table1
from paraprobe.progress import setup_job_logging

setup_job_logging(snakemake.log[0])
write_table1(snakemake.input[0], snakemake.output.tsv, snakemake.output.markdown)
