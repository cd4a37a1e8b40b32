from paraprobe.progress import setup_job_logging
from paraprobe.similarity_figures import draw_figure

setup_job_logging(snakemake.log[0])
draw_figure(
    snakemake.params.figure,
    snakemake.input.tables,
    corpora=snakemake.params.corpora,
    models=snakemake.params.models,
    png_path=snakemake.output.png,
    method=snakemake.params.method,
    reference_group=snakemake.params.get("reference_group", "egemaps_all"),
)
