from paraprobe.progress import setup_job_logging
from paraprobe.similarity import SimilarityInputs, SimilaritySettings, run_similarity

setup_job_logging(snakemake.log[0])
run_similarity(
    SimilarityInputs(
        embeddings=snakemake.input.embeddings,
        egemaps=snakemake.input.egemaps,
        mfcc=snakemake.input.mfcc,
        manifest=snakemake.input.manifest,
    ),
    groups=snakemake.params.groups,
    settings=SimilaritySettings.from_config(snakemake.params.settings),
    outputs={name: snakemake.output[name] for name in ("features", "layers", "hierarchy", "emotion")},
)
