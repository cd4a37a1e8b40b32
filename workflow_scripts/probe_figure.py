"""The per-run table -> Fig. 1, UA per layer (rule probe_figure; writes PNG and SVG)."""

from paraprobe.probe.report import plot_probe_ua
from paraprobe.progress import setup_job_logging

setup_job_logging(snakemake.log[0])
plot_probe_ua(snakemake.input[0], snakemake.output.png)
