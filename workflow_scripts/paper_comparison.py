from pathlib import Path

from paraprobe.io import atomic_path, read_tsv, write_tsv
from paraprobe.paper import compare_layer_cca, compare_probe_ua, comparison_markdown, setting_differences
from paraprobe.progress import setup_job_logging

setup_job_logging(snakemake.log[0])
corpora, models = snakemake.params.corpora, snakemake.params.models
layers = {pair: read_tsv(path) for pair, path in zip(snakemake.params.pairs, snakemake.input.layers)}
probe_ua = read_tsv(snakemake.input.probe_ua)
ua = compare_probe_ua(probe_ua, corpora, models)
cca = compare_layer_cca(layers, corpora, models, method=snakemake.params.method)
differences = setting_differences(
    corpora,
    models,
    snakemake.params.similarity_methods,
    snakemake.params.probe_settings,
    snakemake.params.num_seeds,
    probe_ua,
)
write_tsv(ua, snakemake.output.ua)
write_tsv(cca, snakemake.output.cca)
with atomic_path(snakemake.output.markdown) as temporary:
    Path(temporary).write_text(comparison_markdown(ua, cca, differences))
