"""How long an embedding extraction job is planned to take (its ``runtime`` resource).

Kept apart from :mod:`paraprobe.embeddings` because Snakemake imports it while it parses
the workflow: planning a DAG must not import torch.
"""

from __future__ import annotations

#: Planning throughput of a 12-layer model (audio seconds per second) for :func:`planning_rate`:
#: 7x below bench/extract.py on 2 CPU threads (7 audio s/s, a slower CPU than most); on a GPU
#: 35x below an H100's ≈ 7,000 audio s/s, so that GPUs several times slower (T4, V100) still finish in time.
PLANNING_RATE_PER_CPU_THREAD = 0.5
PLANNING_RATE_PER_GPU = 200.0
PLANNING_OVERHEAD_MINUTES = 10


def planning_rate(num_layers: int, device: str, threads: int, num_shards: int) -> float:
    """Audio seconds of the corpus per wall-clock second that an extraction job plans with.

    A deliberately low throughput: :data:`PLANNING_RATE_PER_CPU_THREAD` per thread on a
    CPU (``auto`` plans as a CPU), :data:`PLANNING_RATE_PER_GPU` on a GPU, for a 12-layer
    model and slower in proportion to more layers. Each of ``num_shards`` jobs reads its
    share of the corpus, so it covers the whole corpus ``num_shards`` times faster. The
    ``runtime`` resource divides the manifest's total audio by this rate and adds
    :data:`PLANNING_OVERHEAD_MINUTES` for loading the model (rules/common.smk).
    """
    rate = PLANNING_RATE_PER_GPU if device.startswith("cuda") else PLANNING_RATE_PER_CPU_THREAD * threads
    return rate * 12 / max(num_layers, 1) * num_shards
