"""The HDF5 embeddings file: its layout, block copies between files, and reusable rows.

:mod:`paraprobe.embeddings` states the contract and writes the numbers; this module
lays out a file, stages pooled rows computed out of order (:class:`PooledRowScratch`),
copies utterances' rows between files in bounded blocks (for reuse and for merging
shards), and finds the rows of a previous file that may be reused.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

#: Bumped whenever the layout or the meaning of a stored number changes; older files are not reused.
FORMAT_VERSION = 1
#: Attributes that must match for a previous file's rows to be reused.
IDENTITY_ATTRIBUTES = ("format_version", "model_fingerprint", "do_normalize", "precision")
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

    Datasets are contiguous (their sizes are known), so rows can be written in any order.
    Returns the (N + 1,) frame offsets.
    """
    text = h5py.string_dtype()
    out.create_dataset("utt_id", data=np.asarray(utt_ids, dtype=object), dtype=text)
    out.create_dataset("sha1", data=np.asarray(sha1s, dtype=object), dtype=text)
    out.create_dataset("num_frames", data=np.asarray(num_frames, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(np.where(keep_frames, num_frames, 0))]).astype(np.int64)
    out.create_dataset("frame_offsets", data=offsets)
    for name in layer_names(num_layers):
        out.create_dataset(f"pooled/{name}", shape=(len(utt_ids), hidden_size), dtype=np.float32)
        out.create_dataset(f"frames/{name}", shape=(int(offsets[-1]), hidden_size), dtype=np.float16)
    out.attrs.update(attributes)
    return offsets


class PooledRowScratch:
    """Pooled vectors of rows computed in any order, stored in row order at the end.

    h5py writes a list of rows one hyperslab at a time: about 20 ms per layer for a
    batch of 200 rows, more than a GPU's forward pass of that batch. Rows go instead to
    an unlinked scratch file at their final positions (one write per row, all hidden
    states together) and reach the datasets in contiguous blocks of at most
    :data:`COPY_BLOCK_BYTES`; host memory stays bounded whatever the corpus size.

    Parameters
    ----------
    directory : path
        Where the scratch file lives (that of the output, so that it is on its disk).
    num_states, width : int
        L + 1 hidden states of D float32 values per row.
    """

    def __init__(self, directory: str | Path, num_states: int, width: int):
        self._file = tempfile.TemporaryFile(dir=directory)
        self.row_shape = (num_states, width)
        self.row_bytes = num_states * width * np.dtype(np.float32).itemsize

    def __enter__(self) -> PooledRowScratch:
        return self

    def __exit__(self, *exc_info) -> None:
        self._file.close()

    def write(self, rows: np.ndarray, pooled: np.ndarray) -> None:
        """Stage ``pooled`` (L + 1, B, D) float32 as rows ``rows`` (B,), in any order."""
        by_row = np.ascontiguousarray(pooled.transpose(1, 0, 2), dtype=np.float32)
        for row, values in zip(rows, by_row, strict=True):
            self._file.seek(int(row) * self.row_bytes)
            self._file.write(values)

    def store(self, datasets: Sequence[h5py.Dataset], rows: np.ndarray) -> None:
        """Copy the staged ``rows`` (increasing) into ``datasets`` (one (R, D) dataset per state)."""
        max_rows = max(1, COPY_BLOCK_BYTES // self.row_bytes)
        runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1) if len(rows) else []
        for run in runs:
            for start in range(int(run[0]), int(run[-1]) + 1, max_rows):
                stop = min(start + max_rows, int(run[-1]) + 1)
                block = np.empty((stop - start, *self.row_shape), dtype=np.float32)
                self._file.seek(start * self.row_bytes)
                if self._file.readinto(block) != block.nbytes:
                    raise OSError(f"scratch file of pooled rows is short at rows {start}-{stop}")
                for state, dataset in enumerate(datasets):
                    dataset[start:stop] = block[:, state]


def copy_utterance_rows(
    destination: h5py.Dataset,
    destination_offsets: np.ndarray,
    pieces: Sequence[tuple[h5py.Dataset, np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    """Copy utterances' rows between ragged datasets, in blocks of bounded size.

    Parameters
    ----------
    destination : (R, D) dataset
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
    out: h5py.File,
    previous_path: str | Path,
    here: np.ndarray,
    there: np.ndarray,
    keep_frames: np.ndarray,
    num_layers: int,
) -> None:
    """Copy pooled rows (and the kept frames) of utterances ``there`` in the previous file to rows ``here``."""
    with h5py.File(previous_path, "r") as previous:
        previous_offsets = previous["frame_offsets"][:]
        with_frames = keep_frames[here]
        for name in layer_names(num_layers):
            pooled_pieces = [(previous[f"pooled/{name}"], np.arange(len(previous_offsets)), there, here)]
            copy_utterance_rows(out[f"pooled/{name}"], np.arange(len(keep_frames) + 1), pooled_pieces)
            frame_pieces = [(previous[f"frames/{name}"], previous_offsets, there[with_frames], here[with_frames])]
            copy_utterance_rows(out[f"frames/{name}"], out["frame_offsets"][:], frame_pieces)
