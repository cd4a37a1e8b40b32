from paraprobe.progress import setup_job_logging
from paraprobe.similarity_figures import draw_figure

setup_job_logging(snakemake.log[0])
params = dict(snakemake.params.items())
draw_figure(
    params.pop("figure"),
    snakemake.input.tables,
    corpora=params.pop("corpora"),
    models=params.pop("models"),
    png_path=snakemake.output.png,
    **params,  # method, and reference_group where the figure has one
)
