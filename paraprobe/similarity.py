"""Representation-similarity analyses of one (corpus, model): the paper's experiments 2-5.

One pass over the frames of the embedding subset feeds four tables (DESIGN.md):

- ``features.tsv``: each layer against each acoustic feature group (Fig. 2);
- ``layers.tsv``: every ordered pair of layers (Fig. 3, Table 3);
- ``hierarchy.tsv``: each layer against the reference group (all eGeMAPS descriptors) at
  three time scales: ``frame``; ``phoneme``, the mean of ``phoneme_frames`` (5) consecutive
  frames; ``word``, the mean of ``word_phonemes`` (5) consecutive phoneme windows (Fig. 4);
- ``emotion.tsv``: each layer against the reference group on the frames of one label (Fig. 5).

Frames go, a chunk of utterances at a time, into :class:`paraprobe.cca.MomentAccumulator`
objects: one over every column (all layers and all acoustic features; the layer-pair and
layer-feature analyses read its blocks), and, per layer, small ones over that layer and the
reference group for each window level and each label. Memory grows with the number of
columns squared, never with the number of frames.

Conventions:

- Windows never cross utterances: each utterance is cut into non-overlapping windows from
  its first frame; an incomplete trailing window is dropped (an utterance of 12 frames gives
  2 phoneme windows and no word window).
- Acoustic columns are z-scored (over the frames analysed) before every method: they mix
  units (dB, Hz, semitones, %), which would otherwise decide CKA, SVCCA's principal
  directions and PWCCA's weights. Embedding dimensions are used as they are. CCA itself is
  scale-invariant.
- With ``voiced_only``, unvoiced frames are dropped first; windows are then cut from the
  remaining frames of each utterance (so a window can span a removed unvoiced stretch).
- Every table row carries ``n_frames`` (observations at its level), ``n_dims`` (p + q) and
  ``frames_per_dim``: in-sample CCA is biased upward when that ratio is small, and a warning
  is logged under 10. With held-out estimation enabled, a seeded random share of the
  utterances is set aside; ``held_out`` then holds the similarity of directions fitted on the
  other utterances, measured on those (empty for ``cka``, which fits nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from paraprobe import cca
from paraprobe.io import write_tsv
from paraprobe.manifest import read_manifest
from paraprobe.progress import Progress

LEVELS = ("frame", "phoneme", "word")
LOW_FRAMES_PER_DIM = 10.0
#: Key columns of each table (DESIGN.md), then the columns every table shares.
TABLE_KEYS = {
    "features": ["layer", "feature_group"],
    "layers": ["layer_a", "layer_b"],
    "hierarchy": ["layer", "level"],
    "emotion": ["layer", "label"],
}
VALUE_COLUMNS = ["method", "value", "n_frames", "n_dims", "frames_per_dim", "held_out"]
ANALYSES = tuple(TABLE_KEYS)

logger = logging.getLogger("paraprobe")


@dataclass(frozen=True)
class SimilaritySettings:
    """The ``similarity:`` section of the config (see schemas/config.schema.yaml)."""

    methods: tuple[str, ...] = ("cca", "pwcca", "cka")
    ridge: float = cca.DEFAULT_RIDGE
    svcca_variance: float = cca.DEFAULT_SVCCA_VARIANCE
    voiced_only: bool = False
    held_out: bool = False
    held_out_fraction: float = 0.2
    held_out_seed: int = 0
    phoneme_frames: int = 5
    word_phonemes: int = 5
    reference_group: str = "egemaps_all"
    chunk_frames: int = 8192
    device: str = "auto"

    def __post_init__(self):
        unknown = [method for method in self.methods if method not in cca.METHODS]
        if unknown or not self.methods:
            raise ValueError(f"similarity.methods: {unknown or 'empty'}; choose from {', '.join(cca.METHODS)}")
        if self.ridge < 0:
            raise ValueError(f"similarity.ridge must be >= 0; got {self.ridge}")
        if not 0 < self.svcca_variance <= 1:
            raise ValueError(f"similarity.svcca_variance must be in (0, 1]; got {self.svcca_variance}")
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"similarity.held_out.fraction must be in (0, 1); got {self.held_out_fraction}")
        if self.phoneme_frames < 1 or self.word_phonemes < 1:
            raise ValueError("similarity.hierarchy window sizes must be >= 1")
        if self.chunk_frames < 1:
            raise ValueError(f"similarity.chunk_frames must be >= 1; got {self.chunk_frames}")

    @classmethod
    def from_config(cls, section: Mapping) -> SimilaritySettings:
        """Settings from the config's ``similarity`` mapping (keys as in the schema)."""
        held_out = section.get("held_out", {})
        hierarchy = section.get("hierarchy", {})
        defaults = cls()
        return cls(
            methods=tuple(section.get("methods", defaults.methods)),
            ridge=float(section.get("ridge", defaults.ridge)),
            svcca_variance=float(section.get("svcca_variance", defaults.svcca_variance)),
            voiced_only=bool(section.get("voiced_only", defaults.voiced_only)),
            held_out=bool(held_out.get("enabled", defaults.held_out)),
            held_out_fraction=float(held_out.get("fraction", defaults.held_out_fraction)),
            held_out_seed=int(held_out.get("seed", defaults.held_out_seed)),
            phoneme_frames=int(hierarchy.get("phoneme_frames", defaults.phoneme_frames)),
            word_phonemes=int(hierarchy.get("word_phonemes", defaults.word_phonemes)),
            reference_group=str(section.get("reference_group", defaults.reference_group)),
            chunk_frames=int(section.get("chunk_frames", defaults.chunk_frames)),
            device=str(section.get("device", defaults.device)),
        )


def window_means(values: np.ndarray, offsets: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of non-overlapping windows of ``window`` consecutive rows, within each utterance.

    Parameters
    ----------
    values : (n, c) rows of consecutive utterances.
    offsets : (u + 1,) utterance i owns rows ``offsets[i]:offsets[i + 1]``.
    window : rows per window; an utterance's incomplete last window is dropped.

    Returns
    -------
    means : (w, c) window means, in utterance order, same dtype as ``values``.
    window_offsets : (u + 1,) utterance i owns windows ``window_offsets[i]:window_offsets[i + 1]``.
    """
    counts = np.diff(offsets) // window
    window_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    means = np.empty((window_offsets[-1], values.shape[1]), dtype=values.dtype)
    for start, windows, out in zip(offsets[:-1], counts, window_offsets[:-1]):
        if windows:
            block = values[start : start + windows * window].reshape(windows, window, values.shape[1])
            means[out : out + windows] = block.mean(axis=1)
    return means, window_offsets


@dataclass(frozen=True)
class ColumnLayout:
    """Where each layer and each acoustic column sits in the joint frame matrix.

    The joint matrix is ``[layer_00 | layer_01 | ... | layer_LL | acoustic columns]``.

    Attributes
    ----------
    num_hidden_states : L + 1 (layer 0 is the CNN encoder's output).
    layer_dims : D, columns per layer.
    feature_names : the acoustic columns, each once, in order of first use by a group.
    groups : group name -> indices into ``feature_names``.
    reference_group : the group the hierarchy and emotion analyses compare layers with.
    """

    num_hidden_states: int
    layer_dims: int
    feature_names: tuple[str, ...]
    groups: Mapping[str, np.ndarray]
    reference_group: str

    @classmethod
    def build(cls, num_hidden_states: int, layer_dims: int, groups: Mapping[str, Sequence[str]], reference_group: str):
        if reference_group not in groups:
            raise ValueError(
                f"similarity.reference_group {reference_group!r} is not a feature group "
                f"(acoustic.groups has {', '.join(groups)})"
            )
        names: list[str] = []
        indices = {}
        for group, columns in groups.items():
            if not columns:
                raise ValueError(f"acoustic.groups.{group} lists no columns")
            for column in columns:
                if column not in names:
                    names.append(column)
            indices[group] = np.array([names.index(column) for column in columns])
        return cls(num_hidden_states, layer_dims, tuple(names), indices, reference_group)

    @property
    def num_columns(self) -> int:
        return self.num_hidden_states * self.layer_dims + len(self.feature_names)

    def layer(self, index: int) -> np.ndarray:
        """Joint-matrix columns of hidden state ``index``."""
        return np.arange(index * self.layer_dims, (index + 1) * self.layer_dims)

    def group(self, name: str) -> np.ndarray:
        """Joint-matrix columns of feature group ``name``."""
        return self.num_hidden_states * self.layer_dims + self.groups[name]

    def layer_with_reference(self, index: int) -> np.ndarray:
        """Joint-matrix columns of a layer followed by the reference group's."""
        return np.concatenate([self.layer(index), self.group(self.reference_group)])


class BlockViews:
    """Named column blocks of one accumulator, each as a :class:`paraprobe.cca.View` built once.

    Parameters
    ----------
    moments : the statistics.
    blocks : block name -> column indices into ``moments``.
    standardized : blocks whose columns are z-scored (acoustic features).
    settings : ridge and SVCCA variance.
    scales : per-block column scale factors to use instead of this accumulator's own
        1 / std: held-out scoring must measure the fitted directions in the coordinates
        they were fitted in.
    """

    def __init__(
        self,
        moments: cca.MomentAccumulator,
        blocks: Mapping[str, np.ndarray],
        standardized: Sequence[str],
        settings: SimilaritySettings,
        scales: Mapping[str, np.ndarray] | None = None,
    ):
        self.moments = moments
        self.blocks = blocks
        self.settings = settings
        if scales is None:
            scales = {
                name: self._inverse_std(columns) if name in standardized else np.ones(len(columns))
                for name, columns in blocks.items()
            }
        self.scales = scales
        self._views: dict[str, cca.View] = {}

    def _inverse_std(self, columns: np.ndarray) -> np.ndarray:
        std = np.sqrt(np.clip(np.diag(self.moments.covariance(columns)), 0, None))
        return np.divide(1.0, std, out=np.ones_like(std), where=std > 0)  # a constant column stays as it is

    @property
    def count(self) -> int:
        return self.moments.count

    def cross(self, a: str, b: str) -> np.ndarray:
        block = self.moments.covariance(self.blocks[a], self.blocks[b])
        return block * np.outer(self.scales[a], self.scales[b])

    def view(self, name: str) -> cca.View:
        if name not in self._views:
            self._views[name] = cca.View(self.cross(name, name), self.settings.ridge, self.settings.svcca_variance)
        return self._views[name]

    def covariances(self, a: str, b: str) -> cca.Covariances:
        return cca.Covariances(self.cross(a, a), self.cross(b, b), self.cross(a, b))


def _swapped(fit: cca.CanonicalFit) -> cca.CanonicalFit:
    return cca.CanonicalFit(fit.correlations, fit.y_weights, fit.x_weights)


def compare_blocks(
    views: BlockViews,
    x: str,
    y: str,
    methods: Sequence[str],
    score: BlockViews | None = None,
    both_orders: bool = False,
) -> list[dict[str, float]]:
    """Similarities of blocks ``x`` and ``y`` for each method, sharing one CCA fit between methods.

    Parameters
    ----------
    views : the statistics the values (or, with ``score``, the directions) come from.
    score : other rows' statistics: values are then held-out estimates (NaN for ``cka``).
    both_orders : also return (y, x); only PWCCA can differ, when p == q (weights from
        the first view), and nothing is refitted.

    Returns
    -------
    One dict method -> value for (x, y), then one for (y, x) if ``both_orders``.
    """
    vx, vy, cross = views.view(x), views.view(y), views.cross(x, y)
    fits = {}
    if {"cca", "pwcca"} & set(methods):
        fits["cca"] = cca.fit_canonical(vx, vy, cross)
    if "svcca" in methods:
        fits["svcca"] = cca.svcca_fit(vx, vy, cross)
    score_covariances = score.covariances(x, y) if score is not None else None
    orders = [(vx, vy, cross, score_covariances, False)]
    if both_orders:
        flipped = None
        if score_covariances is not None:
            flipped = cca.Covariances(score_covariances.yy, score_covariances.xx, score_covariances.xy.T)
        orders.append((vy, vx, cross.T, flipped, True))
    results = []
    for first, second, first_second, scored, flip in orders:
        values = {}
        for method in methods:
            if method == "cka":
                values[method] = (
                    np.nan if score is not None else cca.linear_cka(first.covariance, second.covariance, first_second)
                )
                continue
            fit = fits["svcca" if method == "svcca" else "cca"]
            fit = _swapped(fit) if flip else fit
            averaging = cca.averaging_weights(first, second, fit, method)
            correlations = cca.variate_correlations(fit, scored) if scored is not None else fit.correlations
            values[method] = float(averaging @ correlations)
        results.append(values)
    return results


@dataclass
class _Partitioned:
    """In-sample statistics, plus the fit/score halves when held-out estimation is on."""

    parts: dict[str, cca.MomentAccumulator] = field(default_factory=dict)

    def in_sample(self) -> cca.MomentAccumulator:
        accumulators = list(self.parts.values())
        return accumulators[0] if len(accumulators) == 1 else cca.MomentAccumulator.merged(accumulators)


class PassStatistics:
    """Every accumulator one pass over a (corpus, model)'s frames feeds.

    Parameters
    ----------
    layout : the joint frame matrix's columns.
    settings : analysis settings.
    """

    def __init__(self, layout: ColumnLayout, settings: SimilaritySettings):
        self.layout = layout
        self.settings = settings
        self.partitions = ("fit", "score") if settings.held_out else ("all",)
        self.device = cca.resolve_device(settings.device)
        self.frames = _Partitioned({part: self._accumulator(layout.num_columns) for part in self.partitions})
        self.windows: dict[tuple[str, int], _Partitioned] = {}  # (level, layer)
        self.emotions: dict[tuple[str, int], _Partitioned] = {}  # (label, layer)
        self._per_layer_columns = [layout.layer_with_reference(i) for i in range(layout.num_hidden_states)]

    def _accumulator(self, width: int) -> cca.MomentAccumulator:
        return cca.MomentAccumulator(width, self.device)

    def _per_layer(self, store: dict, key: str) -> list[_Partitioned]:
        """The per-layer accumulators of one window level or label, created on first use."""
        entries = []
        for layer, columns in enumerate(self._per_layer_columns):
            if (key, layer) not in store:
                store[(key, layer)] = _Partitioned({part: self._accumulator(len(columns)) for part in self.partitions})
            entries.append(store[(key, layer)])
        return entries

    def add_chunk(self, rows: np.ndarray, offsets: np.ndarray, labels: Sequence[str], scored: np.ndarray) -> None:
        """Add the frames of consecutive utterances.

        Parameters
        ----------
        rows : (n, layout.num_columns) joint frame matrix, float32 (or float64); used as
            scratch space, so its values are overwritten.
        offsets : (u + 1,) utterance i owns rows ``offsets[i]:offsets[i + 1]``.
        labels : (u,) each utterance's label.
        scored : (u,) bool, True for utterances held out for scoring (ignored without held-out).
        """
        counts = np.diff(offsets)
        row_part = self._row_partition(np.repeat(np.asarray(scored, dtype=bool), counts))
        row_label = np.repeat(np.asarray(labels, dtype=object), counts)
        for label in dict.fromkeys(labels):
            selected = np.flatnonzero(row_label == label)
            self._update_per_layer(self._per_layer(self.emotions, label), rows, row_part[selected], selected)
        level_rows, level_offsets = rows, offsets
        for level, window in (("phoneme", self.settings.phoneme_frames), ("word", self.settings.word_phonemes)):
            level_rows, level_offsets = window_means(level_rows, level_offsets, window)
            level_part = self._row_partition(np.repeat(np.asarray(scored, dtype=bool), np.diff(level_offsets)))
            self._update_per_layer(self._per_layer(self.windows, level), level_rows, level_part)
        # Last, as it shifts ``rows`` in place.
        self._update(self.frames, rows, row_part)

    def _row_partition(self, row_scored: np.ndarray) -> np.ndarray:
        if not self.settings.held_out:
            return np.zeros(len(row_scored), dtype=np.int8)
        return row_scored.astype(np.int8)  # index into ("fit", "score")

    def _update(self, target: _Partitioned, rows: np.ndarray, row_part: np.ndarray) -> None:
        """Add ``rows`` (overwritten) to the partitions of ``target`` that ``row_part`` assigns them to."""
        for index, part in enumerate(self.partitions):
            selected = rows if len(self.partitions) == 1 else rows[row_part == index]
            target.parts[part].update(selected, overwrite_chunk=True)

    def _update_per_layer(
        self, targets: list[_Partitioned], rows: np.ndarray, row_part: np.ndarray, selected: np.ndarray | None = None
    ) -> None:
        """Add each layer's columns and the reference group's, of all ``rows`` or the ``selected`` ones.

        Gathering a layer's block straight from ``rows`` avoids a full-width copy per label.
        """
        if len(row_part) == 0:
            return
        for target, columns in zip(targets, self._per_layer_columns):
            block = rows[:, columns] if selected is None else rows[np.ix_(selected, columns)]
            self._update(target, block, row_part)

    # -- deriving the tables --

    def tables(self) -> dict[str, pd.DataFrame]:
        """The four tables (``features``, ``layers``, ``hierarchy``, ``emotion``) from the statistics.

        Each has its key columns (:data:`TABLE_KEYS`) then :data:`VALUE_COLUMNS`.
        """
        layout = self.layout
        blocks = {_layer_block(index): layout.layer(index) for index in range(layout.num_hidden_states)}
        blocks.update({group: layout.group(group) for group in layout.groups})
        frames = self._block_views(self.frames, blocks, standardized=list(layout.groups))
        rows = {
            "features": self._feature_rows(frames),
            "layers": self._layer_pair_rows(frames),
            "hierarchy": self._hierarchy_rows(frames),
            "emotion": self._emotion_rows(),
        }
        tables = {}
        for name, keys in TABLE_KEYS.items():
            tables[name] = pd.DataFrame(rows[name], columns=keys + VALUE_COLUMNS)
            _warn_low_ratio(name, tables[name], keys, self.settings.held_out)
        return tables

    def _feature_rows(self, frames) -> list[dict]:
        logger.info("similarity: %d layers x %d feature groups", self.layout.num_hidden_states, len(self.layout.groups))
        rows = []
        for index in range(self.layout.num_hidden_states):
            for group in self.layout.groups:
                rows += self._rows(frames, _layer_block(index), group, {"layer": index, "feature_group": group})
        return rows

    def _layer_pair_rows(self, frames) -> list[dict]:
        states = self.layout.num_hidden_states
        logger.info("similarity: %d layer pairs", states * (states + 1) // 2)
        rows = []
        for a in range(states):
            for b in range(a, states):
                orders = [{"layer_a": a, "layer_b": b}] + ([{"layer_a": b, "layer_b": a}] if a != b else [])
                rows += self._rows(frames, _layer_block(a), _layer_block(b), *orders)
        return rows

    def _per_layer_blocks(self) -> dict[str, np.ndarray]:
        """Blocks of the per-layer accumulators: the layer, then the reference group."""
        reference = self.layout.reference_group
        return {
            "layer": np.arange(self.layout.layer_dims),
            reference: self.layout.layer_dims + np.arange(len(self.layout.groups[reference])),
        }

    def _hierarchy_rows(self, frames) -> list[dict]:
        logger.info("similarity: hierarchy (%s)", ", ".join(LEVELS))
        reference = self.layout.reference_group
        rows = []
        for index in range(self.layout.num_hidden_states):
            rows += self._rows(frames, _layer_block(index), reference, {"layer": index, "level": LEVELS[0]})
        for level in LEVELS[1:]:
            for index in range(self.layout.num_hidden_states):
                views = self._block_views(self.windows.get((level, index)), self._per_layer_blocks(), [reference])
                rows += self._rows(views, "layer", reference, {"layer": index, "level": level})
        return rows

    def _emotion_rows(self) -> list[dict]:
        labels = sorted({label for label, _ in self.emotions})
        logger.info("similarity: %d emotion labels", len(labels))
        reference = self.layout.reference_group
        rows = []
        for label in labels:
            for index in range(self.layout.num_hidden_states):
                views = self._block_views(self.emotions[(label, index)], self._per_layer_blocks(), [reference])
                rows += self._rows(views, "layer", reference, {"layer": index, "label": label})
        return rows

    def _block_views(self, statistics: _Partitioned | None, blocks, standardized) -> dict[str, BlockViews] | None:
        """In-sample views and, with held-out on, the fit and score views; None without 2 observations."""
        if statistics is None or sum(part.count for part in statistics.parts.values()) < 2:
            return None
        views = {"in_sample": BlockViews(statistics.in_sample(), blocks, standardized, self.settings)}
        if self.settings.held_out:
            fit, score = statistics.parts["fit"], statistics.parts["score"]
            if fit.count >= 2 and score.count >= 2:
                views["fit"] = BlockViews(fit, blocks, standardized, self.settings)
                views["score"] = BlockViews(score, blocks, standardized, self.settings, scales=views["fit"].scales)
        return views

    def _rows(self, views: dict[str, BlockViews] | None, x: str, y: str, *keys: dict) -> list[dict]:
        """Table rows for blocks x, y: one per method, with ``keys[0]``'s key columns; with a
        second ``keys``, the same again for the order (y, x)."""
        if views is None:
            return []
        methods = self.settings.methods
        in_sample = views["in_sample"]
        both_orders = len(keys) == 2
        values = compare_blocks(in_sample, x, y, methods, both_orders=both_orders)
        if "fit" in views:
            held_out = compare_blocks(views["fit"], x, y, methods, score=views["score"], both_orders=both_orders)
        else:
            held_out = [dict.fromkeys(methods, np.nan) for _ in values]
        n_dims = len(in_sample.blocks[x]) + len(in_sample.blocks[y])
        rows = []
        for order_keys, order_values, order_held_out in zip(keys, values, held_out):
            for method in methods:
                rows.append(
                    {
                        **order_keys,
                        "method": method,
                        "value": order_values[method],
                        "n_frames": in_sample.count,
                        "n_dims": n_dims,
                        "frames_per_dim": in_sample.count / n_dims,
                        "held_out": order_held_out[method],
                    }
                )
        return rows


def _layer_block(index: int) -> str:
    return f"layer_{index:02d}"


def _warn_low_ratio(name: str, table: pd.DataFrame, keys: list[str], held_out: bool) -> None:
    low = table[table["frames_per_dim"] < LOW_FRAMES_PER_DIM].drop_duplicates(keys)
    if len(low):
        worst = low.loc[low["frames_per_dim"].idxmin()]
        where = ", ".join(f"{key} {worst[key]}" for key in keys)
        logger.warning(
            "%s: %d of %d comparisons have fewer than %g frames per dimension (lowest %.2f at %s); "
            "in-sample CCA is biased upward there: %s",
            name,
            len(low),
            len(table.drop_duplicates(keys)),
            LOW_FRAMES_PER_DIM,
            worst["frames_per_dim"],
            where,
            "see the held_out column" if held_out else "enable similarity.held_out for held-out estimates",
        )


# -- reading the stage's inputs --


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in dataset[()]]


class AcousticFile:
    """One ``{corpus}/acoustic/{set}.h5``: per-utterance frames of its columns, and the voicing mask."""

    def __init__(self, path: str | Path, handle: h5py.File):
        self.path = str(path)
        for key in ("utt_id", "values", "frame_offsets", "columns"):
            if key not in handle:
                raise ValueError(f"{self.path}: missing dataset {key!r}")
        self.handle = handle
        self.index = {utt: i for i, utt in enumerate(_strings(handle["utt_id"]))}
        self.offsets = handle["frame_offsets"][()]
        self.columns = _strings(handle["columns"])
        if len(self.offsets) != len(self.index) + 1:
            raise ValueError(
                f"{self.path}: frame_offsets has {len(self.offsets)} entries for {len(self.index)} utterances"
            )

    def rows(self, utt_id: str) -> slice:
        if utt_id not in self.index:
            raise ValueError(f"{self.path}: utterance {utt_id!r} (in the embeddings) is missing")
        i = self.index[utt_id]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def voiced(self, utt_id: str) -> np.ndarray:
        if "voiced" not in self.handle:
            raise ValueError(f"{self.path}: missing dataset 'voiced', needed for similarity.voiced_only")
        return self.handle["voiced"][self.rows(utt_id)].astype(bool)


#: Attributes that fix a file's frame grid: the model's convolutions (acoustic.conv_kernel and
#: conv_stride for the acoustic files).
FRAME_GRID_ATTRIBUTES = ("conv_kernel", "conv_stride")


def check_same_frame_grid(embeddings: h5py.File, embeddings_path: str | Path, sets: Mapping[str, AcousticFile]) -> None:
    """Raise ValueError naming both files when an acoustic file was pooled onto another frame grid
    than the model's (another receptive field or hop: set acoustic.conv_kernel and conv_stride to
    the model's); equal frame counts alone would not show it."""
    for acoustic in sets.values():
        for key in FRAME_GRID_ATTRIBUTES:
            model_value, acoustic_value = embeddings.attrs.get(key), acoustic.handle.attrs.get(key)
            if (
                model_value is not None
                and acoustic_value is not None
                and not np.array_equal(model_value, acoustic_value)
            ):
                raise ValueError(
                    f"{acoustic.path}: {key} {np.asarray(acoustic_value).tolist()} differs from the model's "
                    f"{np.asarray(model_value).tolist()} in "
                    f"{embeddings_path}: its frames are not the model's (set acoustic.{key} to the model's)"
                )


def resolve_feature_columns(names: Sequence[str], sets: Mapping[str, AcousticFile]) -> list[tuple[str, int]]:
    """Which acoustic file and column each feature name is: ``(set, column index)``.

    A name is looked up in every set's ``columns``; it must occur in exactly one, or be
    written ``set:column`` (e.g. ``mfcc:mfcc_1``) to pick one.
    """
    resolved = []
    for name in names:
        if ":" in name and name.split(":", 1)[0] in sets:
            set_name, column = name.split(":", 1)
            candidates = [set_name] if column in sets[set_name].columns else []
        else:
            column = name
            candidates = [set_name for set_name, file in sets.items() if column in file.columns]
        files = " and ".join(file.path for file in sets.values())
        if not candidates:
            raise ValueError(f"acoustic.groups: column {name!r} is in none of {files}")
        if len(candidates) > 1:
            raise ValueError(
                f"acoustic.groups: column {name!r} is in both {files}; write it as "
                + " or ".join(f"'{candidate}:{column}'" for candidate in candidates)
            )
        resolved.append((candidates[0], sets[candidates[0]].columns.index(column)))
    return resolved


@dataclass(frozen=True)
class SimilarityInputs:
    """Paths of one (corpus, model)'s inputs."""

    embeddings: str | Path
    egemaps: str | Path
    mfcc: str | Path
    manifest: str | Path


def accumulate(
    inputs: SimilarityInputs, groups: Mapping[str, Sequence[str]], settings: SimilaritySettings
) -> PassStatistics:
    """One pass over the embedding subset's frames and their acoustic features.

    Raises
    ------
    ValueError
        naming the file and the reason: a missing dataset or column, an utterance absent
        from an acoustic file or the manifest, or frame counts that differ between the
        embeddings and an acoustic file.
    """
    with (
        h5py.File(inputs.embeddings, "r") as embeddings,
        h5py.File(inputs.egemaps, "r") as egemaps_handle,
        h5py.File(inputs.mfcc, "r") as mfcc_handle,
    ):
        sets = {
            "egemaps": AcousticFile(inputs.egemaps, egemaps_handle),
            "mfcc": AcousticFile(inputs.mfcc, mfcc_handle),
        }
        check_same_frame_grid(embeddings, inputs.embeddings, sets)
        utt_ids, offsets, layers = _embedding_frames(embeddings, inputs.embeddings)
        num_hidden_states = len(layers)
        layout = ColumnLayout.build(num_hidden_states, layers[0].shape[1], groups, settings.reference_group)
        columns = resolve_feature_columns(layout.feature_names, sets)
        subset = [i for i in range(len(utt_ids)) if offsets[i + 1] > offsets[i]]
        if not subset:
            raise ValueError(f"{inputs.embeddings}: no utterance has frames (the frame subset is empty)")
        labels = _labels(inputs.manifest, inputs.embeddings, [utt_ids[i] for i in subset])
        scored = _held_out_utterances(subset, len(utt_ids), settings)
        frame_rate = float(embeddings.attrs["frame_rate_hz"])
        statistics = PassStatistics(layout, settings)
        total_frames = int(offsets[subset[-1] + 1] - offsets[subset[0]])
        progress = Progress(
            total=len(subset),
            unit="utterances",
            audio_seconds_total=total_frames / frame_rate,
            logger=logger,
            label=f"similarity {inputs.embeddings}",
        )
        logger.info(
            "similarity: %d utterances, %d frames, %d hidden states x %d dims + %d acoustic columns, device %s",
            len(subset),
            total_frames,
            num_hidden_states,
            layout.layer_dims,
            len(layout.feature_names),
            statistics.device,
        )
        reader = _BatchReader(layers, offsets, layout, sets, columns, settings.voiced_only, inputs.embeddings)
        for batch in _batches(subset, offsets, settings.chunk_frames):
            batch_ids = [utt_ids[i] for i in batch]
            rows, batch_offsets = reader.read(batch, batch_ids)
            statistics.add_chunk(rows, batch_offsets, [labels[utt] for utt in batch_ids], scored[batch])
            progress.update(len(batch), audio_seconds=(offsets[batch[-1] + 1] - offsets[batch[0]]) / frame_rate)
    return statistics


def _embedding_frames(handle: h5py.File, path: str | Path) -> tuple[list[str], np.ndarray, list[h5py.Dataset]]:
    """Utterance ids, frame offsets and the ``frames/layer_LL`` datasets of an embeddings file, checked."""
    for key in ("utt_id", "frame_offsets"):
        if key not in handle:
            raise ValueError(f"{path}: missing dataset {key!r}")
    for key in ("num_layers", "frame_rate_hz"):
        if key not in handle.attrs:
            raise ValueError(f"{path}: missing attribute {key!r}")
    utt_ids = _strings(handle["utt_id"])
    offsets = handle["frame_offsets"][()]
    if len(offsets) != len(utt_ids) + 1 or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{path}: frame_offsets must be {len(utt_ids) + 1} non-decreasing row numbers")
    layers = []
    for index in range(int(handle.attrs["num_layers"]) + 1):
        name = f"frames/layer_{index:02d}"
        if name not in handle:
            raise ValueError(f"{path}: missing dataset {name!r} (num_layers is {handle.attrs['num_layers']})")
        layer = handle[name]
        if layer.ndim != 2 or layer.shape[0] < offsets[-1] or (layers and layer.shape[1] != layers[0].shape[1]):
            raise ValueError(f"{path}: {name} has shape {layer.shape}; expected ({offsets[-1]}, dims of layer_00)")
        layers.append(layer)
    return utt_ids, offsets, layers


def _labels(manifest: str | Path, embeddings: str | Path, utt_ids: Sequence[str]) -> dict[str, str]:
    table = read_manifest(manifest, ("utt_id", "label"))
    labels = dict(zip(table["utt_id"], table["label"]))
    missing = [utt for utt in utt_ids if utt not in labels]
    if missing:
        raise ValueError(
            f"{manifest}: {len(missing)} utterances of {embeddings} are not in the manifest, e.g. {missing[0]!r}"
        )
    return {utt: labels[utt] for utt in utt_ids}


def _held_out_utterances(subset: Sequence[int], num_utterances: int, settings: SimilaritySettings) -> np.ndarray:
    """(num_utterances,) bool: the utterances whose frames score held-out estimates (seeded)."""
    scored = np.zeros(num_utterances, dtype=bool)
    if settings.held_out:
        count = min(len(subset) - 1, max(1, round(settings.held_out_fraction * len(subset))))
        chosen = np.random.default_rng(settings.held_out_seed).choice(len(subset), size=count, replace=False)
        scored[np.asarray(subset)[chosen]] = True
    return scored


def _batches(subset: Sequence[int], offsets: np.ndarray, chunk_frames: int) -> Iterator[list[int]]:
    """Consecutive utterances of the subset, about ``chunk_frames`` frames at a time."""
    batch: list[int] = []
    frames = 0
    for index in subset:
        batch.append(index)
        frames += int(offsets[index + 1] - offsets[index])
        if frames >= chunk_frames:
            yield batch
            batch, frames = [], 0
    if batch:
        yield batch


class _BatchReader:
    """Reads the joint frame matrix of a batch of utterances from the embeddings and acoustic files."""

    def __init__(self, layers, offsets, layout: ColumnLayout, sets, columns, voiced_only: bool, embeddings_path):
        self.layers, self.offsets, self.layout, self.sets = layers, offsets, layout, sets
        self.voiced_only = voiced_only
        self.embeddings_path = str(embeddings_path)
        first_feature = layout.num_hidden_states * layout.layer_dims
        # Per acoustic set: which of its columns to read, and where they go in the joint matrix.
        self.placement = {}
        for set_name in sets:
            positions = [position for position, (source, _) in enumerate(columns) if source == set_name]
            if positions:
                self.placement[set_name] = (
                    np.array([columns[position][1] for position in positions]),
                    first_feature + np.array(positions),
                )

    def read(self, batch: Sequence[int], batch_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, offsets) of the batch: float32 (n, layout.num_columns) and (len(batch) + 1,)."""
        start, stop = int(self.offsets[batch[0]]), int(self.offsets[batch[-1] + 1])
        rows = np.empty((stop - start, self.layout.num_columns), dtype=np.float32)
        dims = self.layout.layer_dims
        for index, dataset in enumerate(self.layers):
            rows[:, index * dims : (index + 1) * dims] = dataset[start:stop]
        keep = []
        for index, utt in zip(batch, batch_ids):
            local = slice(int(self.offsets[index]) - start, int(self.offsets[index + 1]) - start)
            expected = local.stop - local.start
            for set_name, (file_columns, joint_columns) in self.placement.items():
                acoustic = self.sets[set_name]
                values = acoustic.handle["values"][acoustic.rows(utt)]
                if len(values) != expected:
                    raise ValueError(
                        f"utterance {utt!r}: {expected} frames in {self.embeddings_path} but {len(values)} "
                        f"in {acoustic.path}; both must be on the model's frame grid"
                    )
                rows[local, joint_columns] = values[:, file_columns]
            if self.voiced_only:
                voiced = self.sets["egemaps"].voiced(utt)
                if len(voiced) != expected:
                    raise ValueError(
                        f"utterance {utt!r}: {expected} frames in {self.embeddings_path} but {len(voiced)} "
                        f"voicing flags in {self.sets['egemaps'].path}"
                    )
                keep.append(voiced)
        frame_counts = np.array([int(self.offsets[i + 1] - self.offsets[i]) for i in batch])
        if self.voiced_only:
            mask = np.concatenate(keep)
            rows = rows[mask]
            frame_counts = np.array([int(voiced.sum()) for voiced in keep])
        return rows, np.concatenate([[0], np.cumsum(frame_counts)]).astype(np.int64)


def run_similarity(
    inputs: SimilarityInputs,
    groups: Mapping[str, Sequence[str]],
    settings: SimilaritySettings,
    outputs: Mapping[str, str | Path],
) -> dict[str, pd.DataFrame]:
    """Accumulate one (corpus, model)'s statistics and write the four tables.

    Parameters
    ----------
    outputs : table name (``features``, ``layers``, ``hierarchy``, ``emotion``) -> TSV path.
    """
    missing = [name for name in ANALYSES if name not in outputs]
    if missing:
        raise ValueError(f"run_similarity: no output path for {', '.join(missing)}")
    statistics = accumulate(inputs, groups, settings)
    tables = statistics.tables()
    for name in ANALYSES:
        write_tsv(tables[name], outputs[name])
    return tables
