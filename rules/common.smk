# Config handling and helpers every stage uses.
import functools
import math
import os
import re

from snakemake.utils import validate

from paraprobe.acoustic_columns import FEATURE_SETS, check_acoustic_config
from paraprobe.config import (
    apply_user_config,
    check_combinations,
    check_names,
    check_paths,
    check_schema,
    check_unique_keys,
    sort_mapping_keys,
)
from paraprobe.corpora import CorpusError
from paraprobe.manifest import corpus_folds as folds_of_corpus
from paraprobe.manifest import (
    corpus_input_files,
    read_manifest,
    synthetic_audio_root,
    total_audio_hours,
)
from paraprobe.model_configs import (
    CheckpointNotAvailableError,
    InvalidCheckpointError,
    UnsupportedModelError,
    num_transformer_layers,
)

check_unique_keys(
    [
        os.path.join(workflow.basedir, "config.yaml"),
        *workflow.config_settings.configfiles,
    ]
)
apply_user_config(
    config,
    workflow.config_settings.overwrite_config,
    workflow.config_settings.configfiles,
)
check_schema(config, os.path.join(workflow.basedir, "schemas", "config.schema.yaml"))
validate(config, schema="../schemas/config.schema.yaml")  # fills in the defaults
check_paths(config)
check_acoustic_config(config["acoustic"])
check_names(config)
check_combinations(config)
# Config reaches jobs through params, compared by repr: key order must not count.
sort_mapping_keys(config)

OUTDIR = config["outdir"]
CORPORA = sorted(config["corpora"])
MODELS = sorted(config["models"])


wildcard_constraints:
    corpus="|".join(map(re.escape, CORPORA)),
    model="|".join(map(re.escape, MODELS)),


def corpus_config(corpus):
    return config["corpora"][corpus]


def model_config(model):
    return config["models"][model]


# Cached: it walks the corpus tree (7,000 files for the paper), and planning asks per model.
@functools.cache
def corpus_folds(corpus):
    """Fold numbers of a corpus, known before its manifest exists; an error names the corpus."""
    try:
        return folds_of_corpus(corpus_config(corpus))
    except CorpusError as error:
        raise CorpusError(f"corpora.{corpus}: {error}") from None


def model_num_layers(model):
    """Transformer layers L of a model (hidden states layer_00..layer_LL); an error names the model."""
    try:
        return num_transformer_layers(model_config(model))
    except (
        CheckpointNotAvailableError,
        InvalidCheckpointError,
        UnsupportedModelError,
    ) as error:
        raise type(error)(f"models.{model}: {error}") from None


def manifest_path(corpus):
    return f"{OUTDIR}/{corpus}/manifest.tsv"


def gpus_requested(device):
    """The `gpu` resource a job on ``device`` asks for: one when it names CUDA. `auto` asks for
    none (on a CPU-only cluster it must not wait for a GPU), so it may share a visible GPU.
    """
    return int(device.startswith("cuda"))


def runtime_from_audio(audio_rate, overhead_minutes, audio_share=None):
    """A ``runtime`` resource (minutes) sized from the corpus's audio, for a job with a manifest input.

    ``audio_rate`` is the audio seconds of the corpus the job gets through per wall-clock
    second, planned low: a number, or a function (wildcards, threads) -> number.
    ``audio_share`` (manifest path -> fraction) is the share of the audio the job reads, all of
    it by default. A retry (``attempt`` n, with --retries) asks for n times the first attempt's
    time. Snakemake evaluates the callable once the manifest exists, so it also works at plan time.
    """

    def runtime(wildcards, input, threads, attempt):
        rate = audio_rate(wildcards, threads) if callable(audio_rate) else audio_rate
        share = audio_share(input.manifest) if audio_share else 1.0
        minutes = (
            overhead_minutes
            + share * total_audio_hours(input.manifest) * 3600 / rate / 60
        )
        return attempt * math.ceil(minutes)

    return runtime


def frame_subset_share(manifest):
    """The share of a corpus's utterances whose frames the embeddings keep
    (``extraction.frames.utterances``): what the frame-level jobs read, about as much of its audio.
    """
    utterances = config["extraction"]["frames"]["utterances"]
    if utterances == "all":
        return 1.0
    return min(1.0, utterances / len(read_manifest(manifest, ["utt_id"])))


def memory_per_attempt(mem_mb):
    """A ``mem_mb`` resource that grows with the attempt (--retries), so that a job killed for
    memory is not resubmitted with the same request: ``mem_mb`` a number, or a function of
    (wildcards, input, threads)."""

    def memory(wildcards, input, threads, attempt):
        base = mem_mb(wildcards, input, threads) if callable(mem_mb) else mem_mb
        return attempt * base

    return memory


def corpus_inputs(wildcards):
    """The generated audio of a synthetic corpus; else every file the reader reads."""
    corpus = corpus_config(wildcards.corpus)
    if corpus["format"] == "synthetic":
        return {"audio": synthetic_audio_root(OUTDIR, wildcards.corpus)}
    return {"files": corpus_input_files(corpus)}


def corpora_targets():
    return [manifest_path(corpus) for corpus in CORPORA]


def acoustic_targets():
    return expand(
        f"{OUTDIR}/{{corpus}}/acoustic/{{feature_set}}.h5",
        corpus=CORPORA,
        feature_set=FEATURE_SETS,
    )


def report_targets():
    return [f"{OUTDIR}/tables/paper_comparison.md"]
