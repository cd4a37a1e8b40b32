# paraprobe: what each layer of a self-supervised speech model knows about paralinguistics.
# Stages and file contracts: README.md and DESIGN.md. Configuration: schemas/config.schema.yaml.
import os

from snakemake.utils import min_version

min_version("9.0")


# The demo config sits beside this file, so the workflow runs from any --directory.
configfile: os.path.join(workflow.basedir, "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/corpora.smk"
include: "rules/embeddings.smk"
include: "rules/acoustic.smk"
include: "rules/probes.smk"
include: "rules/similarity.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        corpora_targets(),
        embeddings_targets(),
        acoustic_targets(),
        probes_targets(),
        similarity_targets(),
        report_targets(),
