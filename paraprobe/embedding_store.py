"""The HDF5 embeddings file: its layout, raw row writes, block copies between files, and reusable rows.

:mod:`paraprobe.embeddings` states the contract and writes the numbers; this module
lays out a file, writes rows computed in any order straight to their bytes
(:class:`RawRows`), copies utterances' rows between files in bounded blocks (for reuse
and for merging shards), and finds the rows of a previous file that may be reused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

#: Bumped whenever the layout or the meaning of a stored number changes; older files are not reused.
FORMAT_VERSION = 1
#: Attributes that must match for a previous file's rows to be reused.
IDENTITY_ATTRIBUTES = ("format_version", "model_fingerprint", "do_normalize", "precision", "resampling")
#: Attributes of a shard's part file only.
SHARD_ATTRIBUTES = ("shard_index", "num_shards")
#: Bytes one copy block may hold per dataset.
COPY_BLOCK_BYTES = 64 * 2**20


def layer_names(num_layers: int) -> list[str]:
    """``layer_00`` ... ``layer_LL``: the L + 1 hidden states."""
    return [f"layer_{index:02d}" for index in range(num_layers + 1)]


def create_layout(
    out: h5py.File,
    utt_ids: Sequence[str],
    sha1s: Sequence[str],
    num_frames: np.ndarray,
    keep_frames: np.ndarray,
    hidden_size: int,
    num_layers: int,
    attributes: dict,
) -> np.ndarray:
    """Write ids, hashes, offsets and attributes; allocate the pooled and frame datasets.

    Pooled and frame datasets are contiguous and allocated in the file now, without a
    fill value: once the file is closed their rows are written in any order straight to
    their bytes (:func:`raw_locations`, :class:`RawRows`). Returns the (N + 1,) frame offsets.
    """
    text = h5py.string_dtype()
    out.create_dataset("utt_id", data=np.asarray(utt_ids, dtype=object), dtype=text)
    out.create_dataset("sha1", data=np.asarray(sha1s, dtype=object), dtype=text)
    out.create_dataset("num_frames", data=np.asarray(num_frames, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(np.where(keep_frames, num_frames, 0))]).astype(np.int64)
    out.create_dataset("frame_offsets", data=offsets)
    allocated_unfilled = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    allocated_unfilled.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    allocated_unfilled.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    for name in layer_names(num_layers):
        for group, rows, dtype in (("pooled", len(utt_ids), np.float32), ("frames", int(offsets[-1]), np.float16)):
            out.create_dataset(f"{group}/{name}", shape=(rows, hidden_size), dtype=dtype, dcpl=allocated_unfilled)
    out.attrs.update(attributes)
    return offsets


@dataclass(frozen=True)
class RawLocation:
    """Where a contiguous dataset's values lie in its file: byte ``offset`` (None if empty), ``shape``, ``dtype``."""

    offset: int | None
    shape: tuple[int, int]
    dtype: np.dtype


def raw_locations(out: h5py.File, num_layers: int) -> dict[str, RawLocation]:
    """The :class:`RawLocation` of every pooled and frame dataset of a file laid out by :func:`create_layout`."""
    names = [f"{group}/{name}" for group in ("pooled", "frames") for name in layer_names(num_layers)]
    return {name: RawLocation(out[name].id.get_offset(), out[name].shape, out[name].dtype) for name in names}


class RawRows:
    """Rows of a contiguous (R, D) dataset, written to its bytes in the file with ``os.pwrite``.

    For a file HDF5 has closed (it then holds no cached data that could overwrite
    them): h5py writes a list of rows one hyperslab at a time, about 20 ms per layer
    for a batch of 200 rows, more than a GPU's forward pass of that batch; ``os.pwrite``
    releases the interpreter lock, so several threads write at once.

    Parameters
    ----------
    fd : int
        The file, opened for writing.
    location : RawLocation
    """

    def __init__(self, fd: int, location: RawLocation):
        self.fd = fd
        self.offset = location.offset
        self.shape = location.shape
        self.dtype = np.dtype(location.dtype)
        self.row_bytes = self.shape[1] * self.dtype.itemsize

    def write(self, row: int, values: np.ndarray) -> None:
        """Write (D,) or (n, D) ``values`` as rows ``row, row + 1, ...``."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.size == 0:
            return
        if row < 0 or row + values.size // self.shape[1] > self.shape[0] or values.shape[-1] != self.shape[1]:
            raise IndexError(f"rows {row}.. of shape {values.shape} do not fit a dataset of shape {self.shape}")
        data, position = memoryview(values).cast("B"), self.offset + row * self.row_bytes
        while len(data):
            written = os.pwrite(self.fd, data, position)
            data, position = data[written:], position + written

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        """``rows[start:stop] = values``, as for an h5py dataset (what :func:`copy_utterance_rows` writes to)."""
        self.write(rows.start or 0, values)


def copy_utterance_rows(
    destination: h5py.Dataset | RawRows,
    destination_offsets: np.ndarray,
    pieces: Sequence[tuple[h5py.Dataset, np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    """Copy utterances' rows between ragged datasets, in blocks of bounded size.

    Parameters
    ----------
    destination : (R, D) h5py dataset or :class:`RawRows`
        Utterance u owns rows ``[destination_offsets[u], destination_offsets[u + 1])``.
    destination_offsets : (U + 1,) int array
    pieces : list of (source, source_offsets, source_utterances, destination_utterances)
        Copy the rows of source utterance ``source_utterances[k]`` to destination
        utterance ``destination_utterances[k]``; both arrays increasing, and the pieces'
        destination utterances disjoint. Pooled datasets are the case of one row per
        utterance (offsets ``0, 1, ..., U``).

    A block is a run of destination utterances whose rows span at most
    :data:`COPY_BLOCK_BYTES` in the destination and in each source; it costs one read
    per source and one write. Destination rows inside a block that no piece covers are
    written as zeros: the caller fills them afterwards (extraction) or the pieces cover
    every row (merge).
    """
    width, dtype = destination.shape[1], destination.dtype
    max_rows = max(1, COPY_BLOCK_BYTES // (width * dtype.itemsize))
    # (destination utterance, piece, index in the piece), in destination order.
    transfers = sorted(
        (int(target), p, k) for p, (_, _, _, targets) in enumerate(pieces) for k, target in enumerate(targets)
    )
    start = 0
    while start < len(transfers):
        block_start = destination_offsets[transfers[start][0]]
        first_k: dict[int, int] = {}  # piece -> its first and last transfer in the block
        last_k: dict[int, int] = {}
        stop = start
        while stop < len(transfers):
            target, p, k = transfers[stop]
            offsets, utterances = pieces[p][1], pieces[p][2]
            source_span = offsets[utterances[k] + 1] - offsets[utterances[first_k.get(p, k)]]
            destination_span = destination_offsets[target + 1] - block_start
            if stop > start and max(source_span, destination_span) > max_rows:
                break
            first_k.setdefault(p, k)
            last_k[p] = k
            stop += 1
        block = np.zeros((destination_offsets[transfers[stop - 1][0] + 1] - block_start, width), dtype)
        for p, first in first_k.items():
            source, offsets, utterances, targets = pieces[p]
            source_start = offsets[utterances[first]]
            rows = source[source_start : offsets[utterances[last_k[p]] + 1]]
            for k in range(first, last_k[p] + 1):
                u, at = utterances[k], destination_offsets[targets[k]] - block_start
                block[at : at + offsets[u + 1] - offsets[u]] = rows[
                    offsets[u] - source_start : offsets[u + 1] - source_start
                ]
        destination[block_start : block_start + len(block)] = block
        start = stop


def reusable_rows(
    previous_path: str | Path | None,
    attributes: dict,
    utt_ids: Sequence[str],
    sha1s: Sequence[str],
    keep_frames: np.ndarray,
    logger: logging.Logger,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a previous embeddings file that this file may copy instead of computing.

    A row is reusable when the previous file was made with the same
    :data:`IDENTITY_ATTRIBUTES` (same weights, normalisation, precision, format) and has
    the utterance with the same audio hash, and (if this file stores the utterance's
    frames) stored its frames. An unreadable previous file is ignored with a warning.

    Returns (rows here, rows there): increasing int arrays of equal length.
    """
    none = np.zeros(0, dtype=np.int64)
    if previous_path is None or not Path(previous_path).is_file():
        return none, none
    try:
        with h5py.File(previous_path, "r") as previous:
            changed = [key for key in IDENTITY_ATTRIBUTES if previous.attrs.get(key) != attributes[key]]
            if changed:
                logger.info("previous %s differs in %s: recomputing every utterance", previous_path, ", ".join(changed))
                return none, none
            previous_ids = previous["utt_id"].asstr()[:]
            previous_sha1 = previous["sha1"].asstr()[:]
            previous_offsets = previous["frame_offsets"][:]
    except (OSError, KeyError) as error:
        logger.warning("previous %s is unreadable (%s): recomputing every utterance", previous_path, error)
        return none, none
    where = {(utt, sha1): row for row, (utt, sha1) in enumerate(zip(previous_ids, previous_sha1, strict=True))}
    here, there = [], []
    for row, key in enumerate(zip(utt_ids, sha1s, strict=True)):
        match = where.get(key)
        if match is None or (keep_frames[row] and previous_offsets[match + 1] == previous_offsets[match]):
            continue
        # Both files follow manifest order (sorted by utt_id), so matches increase; one
        # that does not (a manifest sorted otherwise) is recomputed, as block copies need order.
        if there and match <= there[-1]:
            continue
        here.append(row)
        there.append(match)
    return np.asarray(here, dtype=np.int64), np.asarray(there, dtype=np.int64)


def copy_previous_rows(
    rows: dict[str, RawRows],
    frame_offsets: np.ndarray,
    previous_path: str | Path,
    here: np.ndarray,
    there: np.ndarray,
    keep_frames: np.ndarray,
    num_layers: int,
) -> None:
    """Copy pooled rows (and the kept frames) of utterances ``there`` in the previous file to rows ``here``.

    ``rows`` holds the new file's pooled and frame datasets by name (``pooled/layer_00``, ...)
    and ``frame_offsets`` its (N + 1,) frame offsets.
    """
    with h5py.File(previous_path, "r") as previous:
        previous_offsets = previous["frame_offsets"][:]
        with_frames = keep_frames[here]
        for name in layer_names(num_layers):
            pooled_pieces = [(previous[f"pooled/{name}"], np.arange(len(previous_offsets)), there, here)]
            copy_utterance_rows(rows[f"pooled/{name}"], np.arange(len(keep_frames) + 1), pooled_pieces)
            frame_pieces = [(previous[f"frames/{name}"], previous_offsets, there[with_frames], here[with_frames])]
            copy_utterance_rows(rows[f"frames/{name}"], frame_offsets, frame_pieces)
