from paraprobe.corpora.synthetic import synthesize_corpus
from paraprobe.progress import setup_job_logging

logger = setup_job_logging(snakemake.log[0])
paths = synthesize_corpus(snakemake.output[0], **snakemake.params.synthesis)
logger.info("wrote %d files under %s", len(paths), snakemake.output[0])
