from paraprobe.progress import setup_job_logging
from paraprobe.similarity_figures import collect, write_layer_table

setup_job_logging(snakemake.log[0])
write_layer_table(
    collect(snakemake.input.tables, snakemake.params.corpora, snakemake.params.models),
    snakemake.output.tsv,
    snakemake.output.markdown,
)
