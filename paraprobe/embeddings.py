"""Every hidden layer of a speech encoder, per utterance, into ``{corpus}/embeddings/{model}.h5``.

File contract (DESIGN.md), N utterances in manifest order, L transformer layers, width D:

- ``utt_id`` (N,) str; ``sha1`` (N,) str, the audio hash each row was computed from;
  ``num_frames`` (N,) int64, the model frames of each utterance;
- ``pooled/layer_00`` ... ``pooled/layer_LL`` (N, D) float32: mean over the utterance's frames;
- ``frames/layer_00`` ... (F, D) float16: every frame of the frame-subset utterances;
- ``frame_offsets`` (N + 1,) int64: utterance i owns frame rows ``[off[i], off[i + 1])``,
  empty when it is not in the subset;
- attributes: ``model``, ``revision``, ``num_layers``, ``frame_rate_hz``, ``do_normalize``,
  ``precision``, the model fingerprint and the frame-subset settings (:func:`file_attributes`).

Layer 0 is Hugging Face's ``hidden_states[0]``, the CNN encoder's output as the
transformer receives it.

How it runs: utterances are grouped into length-bucketed batches
(:func:`paraprobe.batching.plan_batches`) made exact by
:class:`paraprobe.batching.ExactBatching`; worker processes decode the next batches
while the model runs (on a GPU a thread stages them in reused page-locked buffers for the
copy to the device); pooling happens on the device, and only pooled vectors and the
subset's frames cross to the host, where writer threads store them while the device
computes the next batch, straight to their bytes in the HDF5 file
(:class:`paraprobe.embedding_store.RawRows`; host memory does not grow with the corpus).
With ``num_shards > 1`` a job computes the batches
:func:`paraprobe.batching.assign_to_shards` gives it and writes a part file;
:func:`merge_shards` joins the parts into the file one job would write. Rows of a
previous output with the same model, settings and audio hash are copied, not recomputed
(:mod:`paraprobe.embedding_store` holds the file layout and the copying). Every file is
written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import queue
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pandas as pd
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from paraprobe import __version__
from paraprobe.audio import RESAMPLING_DESCRIPTION, TARGET_SAMPLE_RATE, load_audio
from paraprobe.batching import ExactBatching, assign_to_shards, plan_batches
from paraprobe.embedding_store import (
    FORMAT_VERSION,
    SHARD_ATTRIBUTES,
    RawRows,
    copy_previous_rows,
    copy_utterance_rows,
    create_layout,
    layer_names,
    raw_locations,
    reusable_rows,
)
from paraprobe.framing import hop_samples, num_model_frames, receptive_field_samples
from paraprobe.io import atomic_path
from paraprobe.manifest import read_manifest
from paraprobe.models import InputSettings, ModelInfo, load_model, resolve_device
from paraprobe.progress import Progress

#: Padded audio per forward pass when ``batch_seconds`` is ``auto`` on a CPU.
CPU_AUTO_BATCH_SECONDS = 30.0
#: Upper bound of the GPU's automatic batch: larger batches gain nothing and bucket worse.
GPU_MAX_AUTO_BATCH_SECONDS = 600.0
#: Share of free GPU memory the automatic batch may plan to use.
GPU_MEMORY_SHARE = 0.5
#: Threads writing a batch's rows (``os.pwrite`` releases the interpreter lock) while the next one computes.
WRITER_THREADS = 4

#: The manifest columns extraction reads.
EXTRACTION_COLUMNS = ("utt_id", "path", "label", "duration_s", "sha1")


@dataclass(frozen=True)
class ExtractionSettings:
    """The ``extraction:`` config section, as one job uses it.

    Attributes
    ----------
    batch_seconds : float or "auto"
        Padded audio seconds per forward pass; 0 runs one utterance per pass. ``auto``:
        :data:`CPU_AUTO_BATCH_SECONDS` on a CPU, a share of free memory on a GPU.
    device : str
        ``auto`` (CUDA when visible), ``cpu``, ``cuda`` or ``cuda:N``.
    half_precision : bool
        float16 autocast on CUDA (ignored on a CPU, which always computes in float32).
    frame_utterances : int or "all"
        Utterances whose frames are stored (stratified by label), or every utterance.
    frame_seed : int
        Seed of the frame subset.
    threads : int
        CPU threads: torch's on a CPU, audio decoding processes on a GPU.
    """

    batch_seconds: float | str = "auto"
    device: str = "auto"
    half_precision: bool = True
    frame_utterances: int | str = 500
    frame_seed: int = 0
    threads: int = 1


@dataclass(frozen=True)
class ExtractionSummary:
    """What one extraction job did: utterances copied from the previous file and computed."""

    reused: int
    computed: int


# ---------------------------------------------------------------------------------------
# Pure functions of the manifest: the same answer in every job of a corpus.


def manifest_num_samples(manifest: pd.DataFrame) -> np.ndarray:
    """(N,) int64 samples at 16 kHz of each utterance.

    The manifest's ``duration_s`` is ``samples / 16000`` rounded to 1 µs, a 60th of a
    sample, so rounding recovers the count exactly (checked again when the audio is read).
    """
    return np.rint(manifest["duration_s"].to_numpy(dtype=float) * TARGET_SAMPLE_RATE).astype(np.int64)


def frame_subset(manifest: pd.DataFrame, utterances: int | str, seed: int) -> np.ndarray:
    """(N,) bool: the utterances whose frames are stored, stratified by label.

    ``utterances`` ("all", or a count) is split over labels in proportion to their size
    (largest remainders, ties by label). Within a label, the utterances with the smallest
    ``sha1(f"{seed}:{utt_id}")`` are taken: a pure function of the manifest's ids and
    labels, so every model of a corpus gets the same subset, and adding utterances to a
    corpus changes the subset only where the new ones rank among the smallest hashes.
    """
    count = len(manifest)
    if utterances == "all" or int(utterances) >= count:
        return np.ones(count, dtype=bool)
    wanted = int(utterances)
    labels = manifest["label"].to_numpy(dtype=str)
    names, sizes = np.unique(labels, return_counts=True)
    quotas = sizes * wanted / count
    allocated = np.floor(quotas).astype(int)
    # Largest remainders first; np.lexsort sorts by its last key first, ties by label order.
    by_remainder = np.lexsort((np.arange(len(names)), -(quotas - allocated)))
    allocated[by_remainder[: wanted - allocated.sum()]] += 1
    ranks = np.array([hashlib.sha1(f"{seed}:{utt}".encode()).hexdigest() for utt in manifest["utt_id"]])
    chosen = np.zeros(count, dtype=bool)
    for name, quota in zip(names, allocated, strict=True):
        members = np.flatnonzero(labels == name)
        chosen[members[np.argsort(ranks[members], kind="stable")[:quota]]] = True
    return chosen


def shard_batches(num_samples: np.ndarray, budget_samples: int, shard_index: int, num_shards: int) -> list[np.ndarray]:
    """The batches (manifest row indices) shard ``shard_index`` of ``num_shards`` computes.

    Batches are planned over the whole manifest and then dealt to shards, so a
    utterance is computed in the same batch whatever the number of shards, and merged
    shards equal one shard bit for bit.
    """
    batches = plan_batches(num_samples, budget_samples)
    if num_shards == 1:
        return batches
    costs = [len(batch) * num_samples[batch[0]] for batch in batches]
    owner = assign_to_shards(costs, num_shards)
    return [batch for batch, shard in zip(batches, owner, strict=True) if shard == shard_index]


def batch_budget_samples(batch_seconds: float | str, device: torch.device, config) -> int:
    """Padded samples per forward pass for ``extraction.batch_seconds``.

    ``auto`` on a GPU plans for :data:`GPU_MEMORY_SHARE` of the free memory, with an
    estimate of the activation bytes per audio second from the model's config: the first
    convolution's output (the largest activation, held about six times over by the
    convolution, its normalisation, its activation and the exact-batching copies), every
    hidden state twice (as computed and as float32 for pooling) and the feed-forward
    layer, all counted as float32.
    """
    if batch_seconds != "auto":
        return int(float(batch_seconds) * TARGET_SAMPLE_RATE)
    if device.type != "cuda":
        return int(CPU_AUTO_BATCH_SECONDS * TARGET_SAMPLE_RATE)
    free_bytes, _ = torch.cuda.mem_get_info(device)
    first_conv_floats = 6 * TARGET_SAMPLE_RATE / config.conv_stride[0] * config.conv_dim[0]
    frame_rate = TARGET_SAMPLE_RATE / hop_samples(config.conv_stride)
    transformer_floats = frame_rate * (
        2 * (config.num_hidden_layers + 1) * config.hidden_size + 2 * config.intermediate_size
    )
    seconds = GPU_MEMORY_SHARE * free_bytes / (4 * (first_conv_floats + transformer_floats))
    return int(min(GPU_MAX_AUTO_BATCH_SECONDS, seconds) * TARGET_SAMPLE_RATE)


# ---------------------------------------------------------------------------------------
# The forward pass.


class LayerPooler:
    """Runs batches of utterances through a model; pools every hidden state on the device.

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`paraprobe.models.load_model`, already on ``device``.
    info : ModelInfo
        Its geometry (frames per utterance, layers).
    device : torch.device
    half_precision : bool
        float16 autocast, used on CUDA only.
    feature_encoder : {"per_utterance", "batched"} or None
        How the CNN runs on padded batches (:class:`paraprobe.batching.ExactBatching`,
        installed on the model); None when every batch holds one utterance.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        info: ModelInfo,
        device: torch.device,
        half_precision: bool,
        feature_encoder: str | None,
    ):
        self.model = model
        self.info = info
        self.device = device
        self.autocast = device.type == "cuda" and half_precision
        self.exact_batching = (
            ExactBatching(model, info.conv_kernel, info.conv_stride, feature_encoder) if feature_encoder else None
        )

    @property
    def precision(self) -> str:
        """``float32``, or ``float16-autocast`` (stored; part of what makes rows reusable)."""
        return "float16-autocast" if self.autocast else "float32"

    def __call__(
        self, padded: torch.Tensor, num_samples: Sequence[int], keep_frames: Sequence[bool]
    ) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Pool every layer of one batch: :meth:`start`, waited for.

        Returns
        -------
        pooled : (L + 1, B, D) float32 array
            Mean of each hidden state over each utterance's valid frames.
        frames : list of (L + 1, T_b, D) float16 arrays, or None where not kept
        """
        batch = self.start(padded, num_samples, keep_frames)
        batch.wait()
        return batch.pooled, batch.frames

    def start(self, padded: torch.Tensor, num_samples: Sequence[int], keep_frames: Sequence[bool]) -> PooledBatch:
        """Queue the forward pass of one batch and the copies of its results to the host.

        Parameters
        ----------
        padded : (B, max n_b) float32 tensor
            Model input values of B utterances (normalised), zero after each one's end
            (:func:`pad_batch`); on the host (pinned for CUDA) or on the device.
        num_samples : sequence of int
            n_b, the valid samples of each utterance.
        keep_frames : sequence of bool
            Which utterances' frames to return.

        On a GPU this returns once the work is queued, so the host can prepare the next
        batch while the device computes; the arrays are complete after
        :meth:`PooledBatch.wait`.
        """
        padded = padded.to(self.device, non_blocking=True)
        frames_per_utterance = [num_model_frames(n, self.info.conv_kernel, self.info.conv_stride) for n in num_samples]
        with torch.inference_mode():
            with self._precision(), self._attention_kernels(), self._padding(num_samples) as attention_mask:
                outputs = self.model(padded, attention_mask=attention_mask, output_hidden_states=True)
            hidden_states = outputs.hidden_states
            self._check_shapes(hidden_states, len(num_samples), max(frames_per_utterance))
            # Pooling in float32 outside autocast, as a (B, 1, T) x (B, T, D) product with
            # weights 1 / frames on valid frames and 0 on padding.
            valid = torch.as_tensor(frames_per_utterance, device=self.device)
            weights = (torch.arange(hidden_states[0].shape[1], device=self.device)[None, :] < valid[:, None]).float()
            weights = (weights / valid[:, None]).unsqueeze(1)
            pooled = torch.stack([torch.bmm(weights, state.float()).squeeze(1) for state in hidden_states])
            kept = [b for b, keep in enumerate(keep_frames) if keep]
            kept_frames = [
                torch.stack([state[b, : frames_per_utterance[b]] for state in hidden_states]).half() for b in kept
            ]
            # One transfer for the pooled vectors and one for all kept frames of the batch.
            pooled_host = to_host(pooled)
            frames_host = to_host(torch.cat(kept_frames, dim=1)) if kept else None
            ready = None
            if self.device.type == "cuda":
                ready = torch.cuda.Event()
                ready.record()
        frames: list[np.ndarray | None] = [None] * len(num_samples)
        start = 0
        for b in kept:
            frames[b] = frames_host[:, start : start + frames_per_utterance[b]]
            start += frames_per_utterance[b]
        return PooledBatch(pooled_host, frames, ready)

    def _precision(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.float16) if self.autocast else contextlib.nullcontext()

    def _attention_kernels(self) -> contextlib.AbstractContextManager:
        """On a GPU, every attention kernel but cuDNN's, which builds an execution graph for
        each new input shape: about 50 ms of host time, and an extraction's batches rarely
        repeat a shape (the first extraction of a process took 6.7 s with it, 4.3 s without,
        for 8,000 utterances on an H200; later ones 3.9 s either way)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _padding(self, num_samples: Sequence[int]) -> contextlib.AbstractContextManager:
        """Yields the sample attention mask of a padded batch; None for a lone utterance."""
        if len(num_samples) == 1:
            return contextlib.nullcontext(None)
        return self.exact_batching.padded(num_samples, self.device)

    def _check_shapes(self, hidden_states: Sequence[torch.Tensor], batch_size: int, frames: int) -> None:
        expected = (batch_size, frames, self.info.hidden_size)
        if len(hidden_states) != self.info.num_layers + 1 or tuple(hidden_states[0].shape) != expected:
            raise RuntimeError(
                f"{self.info.name} returned {len(hidden_states)} hidden states of shape "
                f"{tuple(hidden_states[0].shape)}; expected {self.info.num_layers + 1} of {expected} "
                "(frame count from paraprobe.framing.num_model_frames)"
            )


@dataclass(frozen=True)
class PooledBatch:
    """What :meth:`LayerPooler.start` returns: the host arrays of a batch, complete once ``ready`` has passed.

    Attributes
    ----------
    pooled : (L + 1, B, D) float32 array
    frames : list of (L + 1, T_b, D) float16 arrays, or None where not kept
    ready : torch.cuda.Event or None
        Recorded after the copies to the host; None on a CPU (already complete).
    """

    pooled: np.ndarray
    frames: list[np.ndarray | None]
    ready: torch.cuda.Event | None

    def wait(self) -> None:
        if self.ready is not None:
            self.ready.synchronize()


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a numpy array; from a GPU an asynchronous copy to page-locked memory.

    The array is complete once the device's current stream has passed the copy (see
    :class:`PooledBatch`); page-locked memory also makes the copy several times faster.
    """
    if tensor.device.type != "cuda":
        return tensor.numpy()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host.numpy()


def pad_batch(inputs: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, max n_b) float32 tensor, zero after each utterance."""
    padded = torch.zeros((len(inputs), max(len(x) for x in inputs)), dtype=torch.float32)
    for row, values in enumerate(inputs):
        padded[row, : len(values)] = torch.from_numpy(values)
    return padded


def model_input(path: str, num_samples: int, inputs: InputSettings) -> np.ndarray:
    """Decode one manifest utterance and turn it into (n,) float32 model input values."""
    samples = load_audio(path)
    if samples.size != num_samples:
        raise ValueError(
            f"{path}: decodes to {samples.size} samples but the manifest says {num_samples} "
            "(duration_s); the file changed since the manifest was built: rebuild the manifest"
        )
    return inputs.prepare(samples)


class DecodedBatch(NamedTuple):
    """A batch's padded model inputs, or the error that decoding one of its files raised."""

    values: torch.Tensor | None
    error: Exception | None

    def values_or_raise(self) -> torch.Tensor:
        if self.error is not None:
            raise self.error
        return self.values


class BatchInputs(torch.utils.data.Dataset):
    """Item k is batch k of ``batches`` decoded, normalised and zero-padded (:func:`pad_batch`).

    Holds only file paths and settings, so worker processes receive it cheaply. A
    decoding error is returned in the :class:`DecodedBatch`, for the job to raise it as
    it is (the DataLoader would turn it into a RuntimeError wrapping a worker traceback).
    """

    def __init__(self, paths: np.ndarray, num_samples: np.ndarray, inputs: InputSettings, batches: list[np.ndarray]):
        self.paths, self.num_samples, self.inputs, self.batches = paths, num_samples, inputs, batches

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def largest_batch_samples(self) -> int:
        """Elements of the largest padded batch: utterances times the longest one's samples."""
        return max((len(rows) * int(self.num_samples[rows].max()) for rows in self.batches), default=0)

    def __getitem__(self, index: int) -> DecodedBatch:
        try:
            rows = self.batches[index]
            return DecodedBatch(
                pad_batch([model_input(self.paths[r], int(self.num_samples[r]), self.inputs) for r in rows]), None
            )
        except Exception as error:  # noqa: BLE001 - re-raised by the job
            return DecodedBatch(None, error)


def decoded_batches(dataset: BatchInputs, workers: int, pin_memory: bool) -> Iterator[torch.Tensor]:
    """The padded inputs of each batch of ``dataset`` in order, decoded ahead by ``workers`` processes.

    Processes rather than threads: decoding threads would contend for the interpreter
    lock with the thread that launches the model's kernels, and on a GPU that lock, not
    the device, set the pace. Each worker holds at most two batches ahead, so host
    memory is bounded by the workers, not the corpus. Workers are forked when this is
    called (they run no CUDA and inherit the loaded settings; spawned ones would re-run
    the Snakemake script); with no workers, or without ``fork``, decoding runs in this
    process. With ``pin_memory`` each batch arrives in page-locked memory, for a fast
    asynchronous transfer to the GPU (see :func:`staged_in_pinned_buffers`).
    """
    forked = workers > 0 and "fork" in multiprocessing.get_all_start_methods()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers if forked else 0,
        prefetch_factor=2 if forked else None,
        multiprocessing_context="fork" if forked else None,
    )
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads (CUDA's, torch's);
        # the workers only decode audio with numpy and libsndfile.
        warnings.filterwarnings("ignore", r".*use of fork\(\) may lead to deadlocks", DeprecationWarning)
        # iter() forks the workers now, before the caller opens its output.
        batches = map(DecodedBatch.values_or_raise, iter(loader))
    return staged_in_pinned_buffers(batches, dataset.largest_batch_samples) if pin_memory else batches


#: Page-locked buffers that :func:`staged_in_pinned_buffers` cycles through.
PINNED_BUFFERS = 3


def staged_in_pinned_buffers(batches: Iterator[torch.Tensor], capacity: int) -> Iterator[torch.Tensor]:
    """Each tensor of ``batches`` copied, by a thread, into one of :data:`PINNED_BUFFERS` reused page-locked buffers.

    Page-locking is slow (about 30 ms per batch-sized buffer): pinning each batch anew, as
    DataLoader's ``pin_memory`` does, page-locked every batch decoded ahead, which took
    1.3 s of a process's first extraction (8 s, 8,000 utterances, H200). A yielded tensor
    stays valid until the CUDA work queued before the next one is requested (its copy to
    the device) has run. ``capacity`` is the largest batch's element count. An error
    raised while producing a batch is raised here, as it is.
    """
    free: queue.Queue = queue.Queue()  # (buffer, event after its last use) or None: stop
    staged: queue.Queue = queue.Queue()  # (tensor, its buffer), (None, the error raised) or None: done
    for _ in range(PINNED_BUFFERS):
        free.put((torch.empty(capacity, dtype=torch.float32, pin_memory=True), None))

    def stage() -> None:
        try:
            for batch in batches:
                slot = free.get()
                if slot is None:
                    return
                buffer, consumed = slot
                if consumed is not None:
                    consumed.synchronize()
                staged.put((buffer[: batch.numel()].view(batch.shape).copy_(batch), buffer))
        except Exception as error:  # noqa: BLE001 - raised by the consumer
            staged.put((None, error))
        staged.put(None)

    stager = threading.Thread(target=stage, name="stage-pinned", daemon=True)
    stager.start()
    try:
        while (item := staged.get()) is not None:
            tensor, buffer_or_error = item
            if tensor is None:
                raise buffer_or_error
            yield tensor
            consumed = torch.cuda.Event()
            consumed.record()
            free.put((buffer_or_error, consumed))
    finally:
        free.put(None)  # a consumer that stops early stops the thread too


# ---------------------------------------------------------------------------------------
# Jobs.


def file_attributes(info: ModelInfo, inputs: InputSettings, precision: str, settings: ExtractionSettings) -> dict:
    """The attributes of an embeddings file (and of each shard's part, which adds its index)."""
    return {
        "model": info.name,
        "revision": info.revision,
        "model_type": info.model_type,
        "model_fingerprint": info.fingerprint,
        "num_layers": info.num_layers,
        "hidden_size": info.hidden_size,
        "frame_rate_hz": info.frame_rate_hz,
        "conv_kernel": np.asarray(info.conv_kernel, dtype=np.int64),
        "conv_stride": np.asarray(info.conv_stride, dtype=np.int64),
        "feat_extract_norm": info.feat_extract_norm,
        "sampling_rate": inputs.sampling_rate,
        "resampling": RESAMPLING_DESCRIPTION,
        "do_normalize": inputs.do_normalize,
        "normalization": (
            "zero mean, unit variance per utterance (Wav2Vec2FeatureExtractor)" if inputs.do_normalize else "none"
        ),
        "precision": precision,
        "pooling": "mean over the utterance's frames",
        "frames_utterances": str(settings.frame_utterances),
        "frames_seed": settings.frame_seed,
        "format_version": FORMAT_VERSION,
        "paraprobe_version": __version__,
    }


class EmbeddingExtractor:
    """A loaded model with the settings it extracts with.

    Loading (weights, fingerprint) happens once here; :meth:`extract` can then run on
    several manifests (the benchmark times it alone).

    Parameters
    ----------
    model_cfg : dict
        The model's entry of the config's ``models:`` (:func:`paraprobe.models.load_model`).
    settings : ExtractionSettings
    logger : logging.Logger, optional
    """

    def __init__(self, model_cfg: dict, settings: ExtractionSettings, logger: logging.Logger | None = None):
        self.settings = settings
        self.logger = logger or logging.getLogger("paraprobe")
        self.device = resolve_device(settings.device)
        if self.device.type == "cuda" and self.device.index is not None:
            # CUDA events (when pooled rows and staged inputs are ready) are recorded on the
            # current device's stream: that must be the one that computes, e.g. cuda:1.
            torch.cuda.set_device(self.device)
        torch.set_num_threads(settings.threads)
        self.model, self.inputs, self.info = load_model(model_cfg, self.device)
        self.budget_samples = batch_budget_samples(settings.batch_seconds, self.device, self.model.config)
        # The CNN runs per utterance on a CPU (nothing to gain from batching it there, and
        # its large first activations stay in cache) and batched on a GPU (large kernels).
        feature_encoder = "batched" if self.device.type == "cuda" else "per_utterance"
        self.pooler = LayerPooler(
            self.model,
            self.info,
            self.device,
            settings.half_precision,
            feature_encoder if self.budget_samples > 0 else None,
        )

    def extract(
        self,
        manifest_path: str | Path,
        output_path: str | Path,
        shard_index: int = 0,
        num_shards: int = 1,
        previous_path: str | Path | None = None,
    ) -> ExtractionSummary:
        """Write the embeddings file of a corpus, or the part file of shard ``shard_index`` of ``num_shards``.

        Parameters
        ----------
        manifest_path : path
            The corpus's ``manifest.tsv``.
        output_path : path
            The ``.h5`` to write (a part file when ``num_shards > 1``; see :func:`merge_shards`).
        shard_index, num_shards : int
            Which share of the corpus's batches this job computes.
        previous_path : path, optional
            An earlier complete embeddings file of this (corpus, model); its rows with an
            unchanged model, settings and audio hash are copied instead of computed.
        """
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard {shard_index} does not exist among {num_shards} shards (0..{num_shards - 1})")
        info, logger = self.info, self.logger
        manifest = read_manifest(manifest_path, EXTRACTION_COLUMNS)
        num_samples = manifest_num_samples(manifest)
        batches = shard_batches(num_samples, self.budget_samples, shard_index, num_shards)
        rows = np.sort(np.concatenate(batches)) if batches else np.zeros(0, dtype=np.int64)
        attributes = file_attributes(info, self.inputs, self.pooler.precision, self.settings)
        if num_shards > 1:
            attributes.update(zip(SHARD_ATTRIBUTES, (shard_index, num_shards), strict=True))
        keep_frames = frame_subset(manifest, self.settings.frame_utterances, self.settings.frame_seed)[rows]
        num_frames = np.array([num_model_frames(n, info.conv_kernel, info.conv_stride) for n in num_samples[rows]])
        utt_ids, sha1s = manifest["utt_id"].to_numpy()[rows], manifest["sha1"].to_numpy()[rows]
        if (num_frames == 0).any():
            short = int(np.flatnonzero(num_frames == 0)[0])
            raise ValueError(
                f"{manifest_path}: utterance {utt_ids[short]} ({num_samples[rows][short]} samples) is shorter than "
                f"{info.name}'s receptive field ({receptive_field_samples(info.conv_kernel, info.conv_stride)} "
                f"samples), so it has no frame; {int((num_frames == 0).sum())} such utterance(s)"
            )
        here, there = reusable_rows(previous_path, attributes, utt_ids, sha1s, keep_frames, logger)
        local = np.full(len(manifest), -1, dtype=np.int64)  # manifest row -> row of this file
        local[rows] = np.arange(len(rows))
        reused = np.zeros(len(rows), dtype=bool)
        reused[here] = True
        to_compute = [batch[~reused[local[batch]]] for batch in batches]
        to_compute = [batch for batch in to_compute if len(batch)]
        computed = sum(len(batch) for batch in to_compute)
        audio_seconds = sum(float(num_samples[batch].sum()) for batch in to_compute) / TARGET_SAMPLE_RATE
        batching = (
            f"batches of {self.budget_samples / TARGET_SAMPLE_RATE:.0f} s"
            if self.budget_samples
            else "one utterance per pass"
        )
        logger.info(
            "%s on %s (%s), %s%s: %d utterances reused from the previous file, %d to compute (%.1f s of audio)",
            info.name, self.device, self.pooler.precision, batching,
            f", shard {shard_index + 1}/{num_shards}" if num_shards > 1 else "", len(here), computed, audio_seconds,
        )  # fmt: skip
        progress = Progress(computed, "utterances", audio_seconds, logger, label=f"{info.name} embeddings")
        inputs = decoded_batches(
            BatchInputs(manifest["path"].to_numpy(), num_samples, self.inputs, to_compute),
            min(self.decode_workers, len(to_compute)),
            pin_memory=self.device.type == "cuda",
        )
        with atomic_path(output_path) as temporary:
            with h5py.File(temporary, "w") as out:
                offsets = create_layout(
                    out, utt_ids, sha1s, num_frames, keep_frames, info.hidden_size, info.num_layers, attributes
                )
                locations = raw_locations(out, info.num_layers)
            fd = os.open(temporary, os.O_WRONLY)
            try:
                rows = {name: RawRows(fd, location) for name, location in locations.items()}
                if len(here):
                    copy_previous_rows(rows, offsets, previous_path, here, there, keep_frames, info.num_layers)
                self._compute(to_compute, inputs, local, num_samples, keep_frames, rows, offsets, progress)
            finally:
                os.close(fd)
        logger.info("wrote %s: %d utterances reused, %d computed", output_path, len(here), computed)
        return ExtractionSummary(reused=len(here), computed=computed)

    def _compute(
        self,
        batches: list[np.ndarray],
        inputs: Iterator[torch.Tensor],
        local: np.ndarray,
        num_samples: np.ndarray,
        keep_frames: np.ndarray,
        rows: dict[str, RawRows],
        offsets: np.ndarray,
        progress: Progress,
    ) -> None:
        """Run ``batches`` (manifest rows; ``local`` maps them to file rows) and write their rows.

        While the device computes batch k + 1, :data:`WRITER_THREADS` threads write batch k,
        a layer per task; waiting for them before queueing batch k + 2 keeps at most two
        batches of results in host memory.
        """
        names = layer_names(self.info.num_layers)
        pooled_rows, frame_rows = [rows[f"pooled/{name}"] for name in names], [rows[f"frames/{name}"] for name in names]

        def write_layer(layer: int, batch_rows: np.ndarray, batch: PooledBatch) -> None:
            batch.wait()
            for row, pooled, frames in zip(batch_rows, batch.pooled[layer], batch.frames, strict=True):
                pooled_rows[layer].write(row, pooled)
                if frames is not None:
                    frame_rows[layer].write(offsets[row], frames[layer])

        with ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="write") as writer:
            writing: list = []
            for batch, padded in zip(batches, inputs, strict=True):
                batch_rows = local[batch]
                pooled = self.pooler.start(padded, num_samples[batch].tolist(), keep_frames[batch_rows].tolist())
                for task in writing:
                    task.result()
                writing = [writer.submit(write_layer, layer, batch_rows, pooled) for layer in range(len(names))]
                progress.update(len(batch), float(num_samples[batch].sum()) / TARGET_SAMPLE_RATE)
            for task in writing:
                task.result()

    @property
    def decode_workers(self) -> int:
        """Audio decoding processes: one per thread on a GPU, none on a CPU.

        On a CPU decoding takes a fraction of a percent of the model's time, and while a
        forked worker lives every page the model rewrites is copied on write.
        """
        return self.settings.threads if self.device.type == "cuda" else 0


def extract_embeddings(
    manifest_path: str | Path,
    model_cfg: dict,
    output_path: str | Path,
    settings: ExtractionSettings,
    shard_index: int = 0,
    num_shards: int = 1,
    previous_path: str | Path | None = None,
    logger: logging.Logger | None = None,
) -> ExtractionSummary:
    """Load the model and write one embeddings (or part) file: :meth:`EmbeddingExtractor.extract`."""
    extractor = EmbeddingExtractor(model_cfg, settings, logger)
    return extractor.extract(manifest_path, output_path, shard_index, num_shards, previous_path)


def merge_shards(
    part_paths: Sequence[str | Path],
    manifest_path: str | Path,
    output_path: str | Path,
    logger: logging.Logger | None = None,
) -> None:
    """Join the part files of every shard into the file a single job would have written.

    Checks that the parts come from the same model and settings, that each shard is
    there once, and that together they hold every manifest utterance exactly once.
    Copies in blocks (:func:`copy_utterance_rows`), so memory does not grow with the corpus.
    """
    logger = logger or logging.getLogger("paraprobe")
    manifest = read_manifest(manifest_path, EXTRACTION_COLUMNS)
    position = {utt: row for row, utt in enumerate(manifest["utt_id"])}
    with contextlib.ExitStack() as stack:
        parts = [stack.enter_context(h5py.File(path, "r")) for path in part_paths]
        attributes = {key: value for key, value in parts[0].attrs.items() if key not in SHARD_ATTRIBUTES}
        for path, part in zip(part_paths, parts, strict=True):
            differing = [key for key in attributes if not np.array_equal(part.attrs.get(key), attributes[key])]
            if differing:
                raise ValueError(f"{path}: differs from {part_paths[0]} in {', '.join(differing)}")
        shard_numbers = sorted(int(part.attrs["shard_index"]) for part in parts)
        if shard_numbers != list(range(len(parts))) or any(int(p.attrs["num_shards"]) != len(parts) for p in parts):
            raise ValueError(
                f"expected the parts of shards 0..{len(parts) - 1} of {len(parts)}; got shards {shard_numbers}"
            )
        rows_of_part = []
        for path, part in zip(part_paths, parts, strict=True):
            ids = part["utt_id"].asstr()[:]
            unknown = [utt for utt in ids if utt not in position]
            if unknown:
                raise ValueError(f"{path}: utterance {unknown[0]} is not in {manifest_path}")
            rows_of_part.append(np.array([position[utt] for utt in ids], dtype=np.int64))
        times = np.bincount(np.concatenate(rows_of_part), minlength=len(manifest))
        if np.any(times != 1):
            raise ValueError(
                f"the parts hold {int((times == 0).sum())} manifest utterances 0 times "
                f"and {int((times > 1).sum())} more than once"
            )
        sha1s = np.empty(len(manifest), dtype=object)
        num_frames = np.zeros(len(manifest), dtype=np.int64)
        keep_frames = np.zeros(len(manifest), dtype=bool)
        part_offsets = [part["frame_offsets"][:] for part in parts]
        for part, rows, offsets in zip(parts, rows_of_part, part_offsets, strict=True):
            sha1s[rows] = part["sha1"].asstr()[:]
            num_frames[rows] = part["num_frames"][:]
            keep_frames[rows] = np.diff(offsets) > 0
        num_layers, hidden_size = int(attributes["num_layers"]), int(attributes["hidden_size"])
        with atomic_path(output_path) as temporary, h5py.File(temporary, "w") as out:
            offsets = create_layout(
                out, manifest["utt_id"], sha1s, num_frames, keep_frames, hidden_size, num_layers, attributes
            )
            for name in layer_names(num_layers):
                pooled_pieces = [
                    (part[f"pooled/{name}"], np.arange(len(rows) + 1), np.arange(len(rows)), rows)
                    for part, rows in zip(parts, rows_of_part, strict=True)
                ]
                copy_utterance_rows(out[f"pooled/{name}"], np.arange(len(manifest) + 1), pooled_pieces)
                frame_pieces = [
                    (part[f"frames/{name}"], part_offset, np.flatnonzero(keep_frames[rows]), rows[keep_frames[rows]])
                    for part, rows, part_offset in zip(parts, rows_of_part, part_offsets, strict=True)
                ]
                copy_utterance_rows(out[f"frames/{name}"], offsets, frame_pieces)
    logger.info("merged %d shards into %s (%d utterances)", len(part_paths), output_path, len(manifest))
