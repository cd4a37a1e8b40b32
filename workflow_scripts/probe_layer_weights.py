"""Per-fold learned layer weights -> their summary table and figure (rule probe_layer_weights)."""

from paraprobe.probe.report import write_layer_weights
from paraprobe.progress import setup_job_logging

setup_job_logging(snakemake.log[0])
write_layer_weights(snakemake.input, snakemake.output.table, snakemake.output.png)
