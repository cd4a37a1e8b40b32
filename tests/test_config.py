import copy
import subprocess
import sys

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from conftest import REPO, snakemake
from paraprobe.config import (
    ConfigError,
    apply_user_config,
    check_combinations,
    check_names,
    check_paths,
    check_schema,
    check_unique_keys,
    sort_mapping_keys,
)

SCHEMA = str(REPO / "schemas" / "config.schema.yaml")


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def validation_error(config: dict) -> str:
    with pytest.raises(WorkflowError) as raised:
        validate(config, SCHEMA)
    return str(raised.value) + str(getattr(raised.value, "args", ""))


def test_demo_config_is_valid_and_gets_defaults():
    config = demo_config()
    validate(config, SCHEMA)
    corpus = config["corpora"]["demo"]
    assert (corpus["folds"], corpus["on_bad_audio"], corpus["merge_calm"]) == (4, "error", False)
    assert config["models"]["RAND"]["init"] == "random"


@pytest.mark.parametrize(
    "change,expected",
    [
        (lambda c: c.update(outdirr="x"), "'outdirr' was unexpected"),
        (lambda c: c["corpora"]["demo"].update(acters=3), "'acters' was unexpected"),
        (lambda c: c["corpora"]["demo"].update(actors="four"), "'four' is not of type 'integer'"),
        (lambda c: c["corpora"]["demo"].update(format="timit"), "'timit' is not one of"),
        (lambda c: c["corpora"].update(rav={"format": "ravdess"}), "'root' is a required property"),
        (lambda c: c["corpora"].update(mine={"format": "csv"}), "'manifest' is a required property"),
        (lambda c: c["corpora"]["demo"].update(on_bad_audio="ignore"), "'ignore' is not one of ['error', 'skip']"),
        (lambda c: c["models"].update(PT={"revision": "main"}), "'id' is a required property"),
    ],
)
def test_schema_errors_name_the_key(change, expected):
    config = demo_config()
    change(config)
    assert expected in validation_error(config)


def test_missing_corpus_root_names_the_key_and_path(tmp_path):
    config = {"corpora": {"rav": {"format": "ravdess", "root": str(tmp_path / "nowhere")}}}
    with pytest.raises(ConfigError, match=r"corpora\.rav\.root: folder .*nowhere does not exist"):
        check_paths(config)
    config = {"corpora": {"mine": {"format": "csv", "manifest": str(tmp_path / "list.csv")}}}
    with pytest.raises(ConfigError, match=r"corpora\.mine\.manifest: file .*list\.csv does not exist"):
        check_paths(config)


def merged_over_demo(user: dict) -> dict:
    """What Snakemake builds before the workflow's own handling: the user's values merged over config.yaml."""
    config = demo_config()
    update_config(config, copy.deepcopy(user))
    return config


def test_a_user_config_file_naming_corpora_is_the_whole_config():
    user = {"corpora": {"rav": {"format": "ravdess", "root": "/data"}}, "models": {"PT": {"id": "x"}}}
    config = merged_over_demo(user)
    apply_user_config(config, user, ["mine.yaml"])
    assert config == user  # no demo corpus, and no demo setting such as its two probe seeds
    validate(config, SCHEMA)
    assert config["probe"]["seeds"] == [0] and config["extraction"]["frames"]["utterances"] == 500


def test_a_user_config_file_without_corpora_changes_the_demo():
    demo = demo_config()
    user = {"probe": {"max_epochs": 5}, "models": {"PT": {"id": "x"}}}
    config = merged_over_demo(user)
    apply_user_config(config, user, ["tweak.yaml"])
    assert config["corpora"] == demo["corpora"] and config["models"] == {"PT": {"id": "x"}}
    assert config["probe"] == {**demo["probe"], "max_epochs": 5}


def test_command_line_values_change_the_demo_and_replace_its_corpora_and_models():
    demo = demo_config()
    user = {"corpora": {"rav": {"format": "ravdess", "root": "/data"}}, "outdir": "elsewhere"}
    config = merged_over_demo(user)
    apply_user_config(config, user, [])
    assert list(config["corpora"]) == ["rav"] and config["outdir"] == "elsewhere"
    assert config["models"] == demo["models"] and config["probe"] == demo["probe"]


def test_mapping_keys_are_sorted_except_the_feature_groups():
    config = {
        "models": {"B": {"seed": 0, "init": "random"}, "A": {"id": "x"}},
        "probe": {"seeds": [1, 0], "patience": 5},
        "acoustic": {"threads": 2, "groups": {"mfcc": ["mfcc1", "mfcc0"], "energy": ["Loudness_sma3"]}},
    }
    sort_mapping_keys(config)
    assert list(config) == ["acoustic", "models", "probe"]
    assert list(config["models"]) == ["A", "B"] and list(config["models"]["B"]) == ["init", "seed"]
    assert config["probe"]["seeds"] == [1, 0]  # lists keep their order
    assert list(config["acoustic"]) == ["groups", "threads"]
    assert list(config["acoustic"]["groups"]) == ["mfcc", "energy"]  # reported in this order
    assert config["acoustic"]["groups"]["mfcc"] == ["mfcc1", "mfcc0"]


def snakemake_dry_run(tmp_path, user_config: dict):
    configfile = tmp_path / "mine.yaml"
    configfile.write_text(yaml.safe_dump(user_config))
    return snakemake(tmp_path, "--configfile", str(configfile), "-n", "--quiet")


def test_workflow_refuses_a_bad_config_before_any_job(tmp_path):
    models = demo_config()["models"]
    result = snakemake_dry_run(
        tmp_path, {"corpora": {"rav": {"format": "ravdess", "root": "/no/such/dir"}}, "models": models}
    )
    assert result.returncode != 0
    assert "corpora.rav.root: folder /no/such/dir does not exist" in result.stdout + result.stderr
    result = snakemake_dry_run(
        tmp_path, {"corpora": {"demo": {"format": "synthetic", "actors": "4"}}, "models": models}
    )
    assert result.returncode != 0
    assert "'4' is not of type 'integer'" in result.stdout + result.stderr
    result = snakemake_dry_run(tmp_path, {"corpora": demo_config()["corpora"]})  # says what to run, not with what
    assert result.returncode != 0
    assert "'models' is a required property" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_dry_run_refuses_a_corpus_root_that_is_not_the_corpus_and_names_a_bad_model(tmp_path):
    (tmp_path / "downloads" / "IEMOCAP_full_release").mkdir(parents=True)  # the folder above the corpus
    corpora = {"iem": {"format": "iemocap", "root": str(tmp_path / "downloads")}}
    result = snakemake_dry_run(tmp_path, {"corpora": corpora, "models": demo_config()["models"]})
    assert result.returncode != 0
    assert f"corpora.iem: {tmp_path / 'downloads'}: no Session<N> folders" in result.stdout + result.stderr
    models = {"RAND": {"init": "random", "architecture": "wav2vec3"}}
    result = snakemake_dry_run(tmp_path, {"corpora": demo_config()["corpora"], "models": models})
    assert result.returncode != 0
    assert "models.RAND: architecture 'wav2vec3' is not a transformers model_type" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "error, traceback_shown",
    [("paraprobe.config.ConfigError('corpora.x.root: folder /x does not exist')", False), ("KeyError('bug')", True)],
)
def test_a_job_reports_an_input_error_in_one_line_and_a_bug_with_its_traceback(tmp_path, error, traceback_shown):
    log = tmp_path / "job.log"
    script = f"import paraprobe.config\nfrom paraprobe.progress import setup_job_logging\nsetup_job_logging({str(log)!r})\nraise {error}\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert ("Traceback" in result.stderr) == traceback_shown
    name = error.split("(")[0].rsplit(".", 1)[-1]
    assert f"ERROR {name}: " in log.read_text() and f"ERROR {name}: " in result.stderr


def test_a_number_given_as_text_says_where_that_comes_from():
    config = demo_config()
    config["probe"] = {"patience": "5"}  # as --config "probe={patience: 5}" gives it
    with pytest.raises(ConfigError) as raised:
        check_schema(config, SCHEMA)
    assert str(raised.value) == (
        "probe.patience: '5' is not of type 'integer'; Snakemake reads values nested in --config "
        "(e.g. probe={patience: 5}) as text: give nested values in a --configfile"
    )
    config["probe"] = {"device": 5}
    with pytest.raises(ConfigError, match=r"^probe.device: 5 is not of type 'string'$"):
        check_schema(config, SCHEMA)
    config["probe"] = {"learning_rate": "2e-4"}  # as PyYAML reads learning_rate: 2e-4 in a config file
    with pytest.raises(
        ConfigError,
        match=r"^probe.learning_rate: '2e-4' is not of type 'number'; YAML reads 2e-4 as text: write 0.0002$",
    ):
        check_schema(config, SCHEMA)
    config["probe"] = {"patience": "{a: [1"}  # not YAML either: no hint, no parser error
    with pytest.raises(ConfigError, match=r"^probe.patience: '\{a: \[1' is not of type 'integer'$"):
        check_schema(config, SCHEMA)


def test_a_jobs_log_holds_python_warnings_and_other_libraries_warnings(tmp_path):
    log = tmp_path / "job.log"
    script = (
        "import logging, warnings\n"
        "from paraprobe.progress import setup_job_logging\n"
        f"logger = setup_job_logging({str(log)!r})\n"
        "setup_job_logging(None)\n"  # a second call adds nothing
        "logger.info('paraprobe info')\n"
        "warnings.warn('a python warning')\n"
        "logging.getLogger('transformers').propagate = False\n"  # as transformers sets it
        "logging.getLogger('transformers.modeling_utils').warning('a transformers warning')\n"
        "logging.getLogger('other').info('another library chatting')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    for line in ("INFO paraprobe info", "UserWarning: a python warning", "WARNING a transformers warning"):
        assert text.count(line) == 1, (line, text)
    assert "another library chatting" not in text


@pytest.mark.parametrize(
    "change, message",
    [
        ({"probes": {}}, "the config's top level: Additional properties are not allowed ('probes' was unexpected)"),
        ({"outdir": ""}, "outdir: '' does not match '[^/]'"),
        ({"outdir": "/"}, "outdir: '/' does not match '[^/]'"),
        (
            {"extraction": {"frames": {"utterances": 0}}},
            "extraction.frames.utterances: 0 is less than the minimum of 1",
        ),
        (
            {"probe": {"learning_rate_by_format": {"ravdes": 1e-3}}},
            "probe.learning_rate_by_format: 'ravdes' is not one of",
        ),
        (
            {"models": {"RAND": {"init": "random", "architecture": "wav2vec2", "seed": -1}}},
            "models.RAND.seed: -1 is less than",
        ),
    ],
)
def test_a_config_against_the_schema_gets_one_line_naming_the_key(change, message):
    config = demo_config()
    config.update(change)
    with pytest.raises(ConfigError) as raised:
        check_schema(config, SCHEMA)
    assert str(raised.value).startswith(message)


def test_the_demo_config_passes_the_schema_and_its_names_resolve():
    config = demo_config()
    check_schema(config, SCHEMA)
    validate(config, SCHEMA)
    check_names(config)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"probe": {"learning_rate_by_corpus": {"dmeo": 1e-3}}},
            "probe.learning_rate_by_corpus.dmeo: no corpus of that name (corpora: demo)",
        ),
        (
            {"similarity": {"reference_group": "energyy"}},
            "similarity.reference_group: 'energyy' is not one of acoustic.groups (energy, ",
        ),
    ],
)
def test_names_the_config_refers_to_must_exist(change, message):
    config = demo_config()
    update_config(config, change)
    validate(config, SCHEMA)
    with pytest.raises(ConfigError) as raised:
        check_names(config)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_shards_with_batches_sized_by_each_gpu_are_refused(device):
    config = demo_config()
    update_config(config, {"extraction": {"shards": 2, "device": device}})
    validate(config, SCHEMA)
    with pytest.raises(ConfigError) as raised:
        check_combinations(config)
    assert str(raised.value) == (
        "extraction.batch_seconds: 'auto' sizes batches from each job's free GPU memory when it runs on a GPU "
        f"(extraction.device: {device}), and the 2 extraction.shards must plan the same batches; give a number "
        "of seconds, or extraction.device: cpu"
    )
    for fine in ({"batch_seconds": 60}, {"shards": 1}, {"device": "cpu"}):
        allowed = copy.deepcopy(config)
        update_config(allowed, {"extraction": fine})
        check_combinations(allowed)


def test_a_revision_of_a_local_checkpoint_directory_is_refused(tmp_path):
    config = demo_config()
    config["models"] = {"mine": {"id": str(tmp_path), "revision": "main"}}
    validate(config, SCHEMA)
    with pytest.raises(ConfigError) as raised:
        check_combinations(config)
    assert str(raised.value) == (
        f"models.mine.revision: {tmp_path} is a local directory, which has no revisions (a revision selects a "
        "commit of a Hugging Face hub id); remove the revision or use the hub id"
    )
    config["models"]["hub"] = {"id": "facebook/wav2vec2-base", "revision": "main"}
    del config["models"]["mine"]
    check_combinations(config)


def test_a_key_given_twice_in_a_config_file_is_refused_with_its_line(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("probe:\n  patience: 5\ncorpora:\n  demo: {format: synthetic}\nprobe:\n  seeds: [0, 1]\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 5: key 'probe' appears twice in one mapping"):
        check_unique_keys([REPO / "config.yaml", path])
    path.write_text("corpora:\n  demo: {format: synthetic, seed: 1, seed: 2}\n")
    with pytest.raises(ConfigError, match=r"line 2: key 'seed' appears twice"):
        check_unique_keys([path])
