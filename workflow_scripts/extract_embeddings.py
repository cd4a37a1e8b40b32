from paraprobe.embeddings import ExtractionSettings, extract_embeddings
from paraprobe.progress import setup_job_logging

params = snakemake.params
extract_embeddings(
    snakemake.input.manifest,
    params.model,
    snakemake.output[0],
    ExtractionSettings(
        batch_seconds=params.batch_seconds,
        device=params.device,
        half_precision=params.half_precision,
        frame_utterances=params.frames["utterances"],
        frame_seed=params.frames["seed"],
        threads=snakemake.threads,
    ),
    shard_index=params.shard,
    num_shards=params.shards,
    previous_path=params.previous,
    logger=setup_job_logging(snakemake.log[0]),
)
