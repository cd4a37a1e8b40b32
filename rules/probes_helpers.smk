# Helpers of the probing rules (kept apart from the rules, as snakemake --lint asks).
from dataclasses import asdict

from paraprobe.probe.names import WEIGHTED_AVERAGE, probe_input_names
from paraprobe.probe.settings import probe_settings

PROBES = f"{OUTDIR}/{{corpus}}/probes/{{model}}"


def probe_fold_jsons(corpus, model):
    """Every fold JSON of one corpus and model."""
    return expand(
        f"{OUTDIR}/{corpus}/probes/{model}/{{input}}/fold{{fold}}.json",
        input=probe_input_names(model_num_layers(model)),
        fold=corpus_folds(corpus),
    )


def probe_layer_weight_tables(corpus, model):
    """Every fold's learned layer weights of one corpus and model."""
    return expand(
        f"{OUTDIR}/{corpus}/probes/{model}/{WEIGHTED_AVERAGE}/fold{{fold}}_layer_weights.tsv",
        fold=corpus_folds(corpus),
    )


def models_by_num_layers():
    """Transformer layer count L -> the models with L layers (their probes have the same inputs)."""
    groups = {}
    for model in MODELS:
        groups.setdefault(model_num_layers(model), []).append(model)
    return groups


def corpus_probe_settings(corpus):
    """The probe settings of ``corpus``, as a dict (a params value)."""
    return asdict(
        probe_settings(config["probe"], corpus, corpus_config(corpus)["format"])
    )


def probe_fold_mem_mb(wildcards, input, threads):
    """A fold job's memory (MB): the pooled layers and one standardised copy per seed (the
    seeds train together); the file also holds float16 frames, so its size bounds the
    pooled layers'."""
    return 2000 + (2 + len(config["probe"]["seeds"])) * input.size_mb


def probes_targets():
    """The probing stage's final files (the fold JSONs come in as their inputs)."""
    return [
        f"{OUTDIR}/tables/probe_ua.tsv",
        f"{OUTDIR}/tables/table1_probe_ua.tsv",
        f"{OUTDIR}/tables/table1_probe_ua.md",
        f"{OUTDIR}/figures/fig1_probe_ua.png",
        f"{OUTDIR}/figures/fig1_probe_ua.svg",
        f"{OUTDIR}/tables/probe_layer_weights.tsv",
        f"{OUTDIR}/figures/probe_layer_weights.png",
        f"{OUTDIR}/figures/probe_layer_weights.svg",
    ]
