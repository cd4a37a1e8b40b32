"""Probing: metrics, speaker-independent splits, the trainers, fold files, tables and figures."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from paraprobe.io import read_tsv, write_tsv
from paraprobe.probe.crossval import run_probe_fold
from paraprobe.probe.inputs import build_probe_inputs, load_pooled_layers
from paraprobe.probe.metrics import classification_scores, confusion_matrix
from paraprobe.probe.names import layer_name, probe_input_names
from paraprobe.probe.report import (
    collect_probe_runs,
    table1,
    table1_markdown,
    write_layer_weights,
    write_probe_summary,
    write_table1,
    plot_probe_ua,
)
from paraprobe.probe.settings import ProbeSettings, probe_settings
from paraprobe.probe.splits import fold_split
from paraprobe.probe import crossval, training
from paraprobe.probe.training import EarlyStopping, train_probes

NUM_LAYERS = 4  # transformer layers L: hidden states layer_00..layer_04
PLANTED_LAYER = 2
NUM_CLASSES = 4
#: Fast settings for planted data; a high rate so the layer weights move within few epochs.
FAST = ProbeSettings(learning_rate=1e-2, batch_size=32, patience=5, max_epochs=40)


def planted_corpus(num_speakers: int = 16, per_speaker: int = 20, dim: int = 12, seed: int = 0):
    """Labels, speakers, folds and (L + 1, N, D) layers where only PLANTED_LAYER carries the label.

    The planted layer adds a one-hot class code of amplitude 4 to the first NUM_CLASSES dims of
    unit Gaussian noise; every other layer is pure noise. Four folds of whole speakers.
    """
    rng = np.random.default_rng(seed)
    num_rows = num_speakers * per_speaker
    speakers = np.repeat([f"spk{i:02d}" for i in range(num_speakers)], per_speaker)
    folds = np.repeat(np.arange(1, 5), num_rows // 4)
    labels = rng.integers(0, NUM_CLASSES, num_rows)
    layers = rng.normal(size=(NUM_LAYERS + 1, num_rows, dim)).astype(np.float32)
    layers[PLANTED_LAYER, :, :NUM_CLASSES] += 4 * np.eye(NUM_CLASSES)[labels]
    return labels, speakers, folds, layers


def write_planted_files(directory: Path, manifest_changes: dict | None = None) -> tuple[Path, Path]:
    """A manifest and an embeddings file of the planted corpus, as the earlier stages write them.

    ``manifest_changes``: manifest columns to replace (column name -> values).
    """
    labels, speakers, folds, layers = planted_corpus()
    names = np.array(["angry", "happy", "neutral", "sad"])
    utt_ids = [f"utt{i:04d}" for i in range(len(labels))]
    manifest = pd.DataFrame(
        {
            "utt_id": utt_ids,
            "path": [f"/audio/{u}.wav" for u in utt_ids],
            "label": names[labels],
            "speaker": speakers,
            "fold": folds,
            "duration_s": 1.0,
            "sha1": "0" * 40,
        }
    ).assign(**(manifest_changes or {}))
    manifest_path = directory / "manifest.tsv"
    write_tsv(manifest, manifest_path)
    embeddings_path = directory / "RAND.h5"
    with h5py.File(embeddings_path, "w") as h5:
        h5["utt_id"] = np.array(utt_ids, dtype="S")
        for index, layer in enumerate(layers):
            h5[f"pooled/{layer_name(index)}"] = layer
    return manifest_path, embeddings_path


def probe_fold(
    directory: Path, inputs: list[str], seeds: list[int], fold: int = 1, manifest_changes: dict | None = None
) -> dict[str, Path]:
    """Run the fold job on the planted files (``manifest_changes`` as :func:`write_planted_files`);
    return input -> fold JSON path."""
    manifest_path, embeddings_path = write_planted_files(directory, manifest_changes)
    json_paths = {name: directory / "probes" / name / f"fold{fold}.json" for name in inputs}
    weights = directory / "probes" / "weighted_average" / f"fold{fold}_layer_weights.tsv"
    run_probe_fold(
        manifest_path,
        embeddings_path,
        json_paths,
        weights if "weighted_average" in inputs else None,
        corpus="planted",
        model="RAND",
        fold=fold,
        settings=FAST,
        seeds=seeds,
        validation_share=0.15,
        threads=1,
    )
    return json_paths


# --- metrics ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_scores_match_scikit_learn_including_absent_and_never_predicted_classes():
    rng = np.random.default_rng(1)
    true = rng.choice([0, 1, 2, 4], size=200)  # class 3 never occurs in the test set
    predicted = np.where(rng.random(200) < 0.6, true, rng.choice([0, 1, 3, 4], size=200))  # 2 never predicted
    confusion = confusion_matrix(true, predicted, 5)
    scores = classification_scores(confusion)
    np.testing.assert_array_equal(confusion, sklearn_confusion_matrix(true, predicted, labels=range(5)))
    assert scores["ua"] == pytest.approx(balanced_accuracy_score(true, predicted))
    assert scores["wa"] == pytest.approx(accuracy_score(true, predicted))
    assert scores["macro_f1"] == pytest.approx(f1_score(true, predicted, average="macro"))


def test_confusion_matrix_rejects_out_of_range_classes():
    with pytest.raises(ValueError, match="predicted class indices must lie in 0..2"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)


# --- splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_folds_and_validation_are_speaker_independent(seed):
    _, speakers, folds, _ = planted_corpus()
    for test_fold in (1, 2, 3, 4):
        split = fold_split(speakers, folds, test_fold, validation_share=0.15, seed=seed)
        sets = [split.train, split.validation, split.test]
        assert sorted(np.concatenate(sets)) == list(range(len(speakers)))
        speaker_sets = [set(speakers[rows]) for rows in sets]
        assert all(not (a & b) for i, a in enumerate(speaker_sets) for b in speaker_sets[i + 1 :])
        assert set(split.test) == set(np.flatnonzero(folds == test_fold))
        assert len(speaker_sets[1]) == round(0.15 * 12) == 2  # 12 training speakers
        assert speaker_sets[1] == set(split.validation_speakers)
        again = fold_split(speakers, folds, test_fold, validation_share=0.15, seed=seed)
        np.testing.assert_array_equal(again.validation, split.validation)
    other_seeds = {fold_split(speakers, folds, 1, 0.15, s).validation_speakers for s in range(6)}
    assert len(other_seeds) > 1, "the seed should choose the validation speakers"


def test_split_rejects_a_speaker_in_two_folds():
    speakers = np.array(["a", "a", "b", "c"])
    with pytest.raises(ValueError, match=r"not speaker-independent .*speaker 'a' in folds \[1, 2\]"):
        fold_split(speakers, np.array([1, 2, 2, 3]), 1, 0.2, 0)


# --- inputs ----------------------------------------------------------------------------------


def test_inputs_are_standardised_with_training_rows_only():
    _, speakers, folds, layers = planted_corpus()
    split = fold_split(speakers, folds, 1, 0.15, 0)
    inputs = build_probe_inputs(layers + 5.0, [split.train], probe_input_names(NUM_LAYERS), dtype=torch.float64)
    features = inputs.features[0].transpose(0, 1).numpy()  # (R, N, D)
    assert inputs.names[-1] == "weighted_average" and len(inputs.rows) == NUM_LAYERS + 4
    train = features[:, split.train]
    np.testing.assert_allclose(train.mean(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(train.std(axis=1), 1, atol=1e-5)
    assert np.abs(features[:, split.test].mean(axis=1)).max() > 1e-3  # test rows not used
    average_row = features[inputs.rows[inputs.names.index("average")]]
    raw_average = layers.mean(axis=0)
    expected = (raw_average - raw_average[split.train].mean(0)) / raw_average[split.train].std(0)
    np.testing.assert_allclose(average_row, expected, atol=1e-5)
    assert inputs.rows[inputs.names.index("last")] == NUM_LAYERS


def test_load_pooled_layers_checks_the_manifest_order(tmp_path):
    manifest_path, embeddings_path = write_planted_files(tmp_path)
    utt_ids = read_tsv(manifest_path)["utt_id"].tolist()
    assert load_pooled_layers(embeddings_path, utt_ids).shape == (NUM_LAYERS + 1, len(utt_ids), 12)
    with pytest.raises(ValueError, match=r"RAND\.h5: utt_id .* differs from the manifest"):
        load_pooled_layers(embeddings_path, utt_ids[::-1])


def test_load_pooled_layers_refuses_vectors_that_are_not_finite(tmp_path):
    manifest_path, embeddings_path = write_planted_files(tmp_path)
    utt_ids = read_tsv(manifest_path)["utt_id"].tolist()
    with h5py.File(embeddings_path, "a") as h5:
        h5["pooled/layer_02"][7, 3] = np.nan
        h5["pooled/layer_03"][9, 0] = np.inf
    with pytest.raises(ValueError) as raised:
        load_pooled_layers(embeddings_path, utt_ids)
    assert str(raised.value).startswith(
        f"{embeddings_path}: pooled/layer_02 of utterance utt0007 is not finite (NaN or inf), as are 1 more"
    )


# --- training ----------------------------------------------------------------------------------


def test_probe_settings_pick_the_learning_rate_by_corpus_then_format():
    probe_config = {
        "hidden_sizes": [128, 16], "learning_rate": 2e-4, "learning_rate_by_format": {"iemocap": 1e-4},
        "learning_rate_by_corpus": {"mine": 5e-4}, "weight_decay": 1e-5, "batch_size": 64,
        "patience": 10, "max_epochs": 200,
    }  # fmt: skip
    assert probe_settings(probe_config, "iem", "iemocap").learning_rate == 1e-4
    assert probe_settings(probe_config, "rav", "ravdess").learning_rate == 2e-4
    assert probe_settings(probe_config, "mine", "iemocap").learning_rate == 5e-4
    assert probe_settings(probe_config, "rav", "ravdess").hidden_sizes == (128, 16)
    with pytest.raises(ValueError, match="probe setting patience must be positive, got 0"):
        probe_settings({**probe_config, "patience": 0}, "rav", "ravdess")


def test_early_stopping_keeps_the_best_epoch_and_waits_patience_epochs():
    stopping = EarlyStopping(num_probes=2, patience=2)
    losses = [(1.0, 1.0), (0.5, 1.2), (0.6, 0.9), (0.7, 0.8), (0.4, 0.7)]
    improved = [stopping.update(epoch, np.array(loss)) for epoch, loss in enumerate(losses, start=1)]
    assert [list(i) for i in improved[:3]] == [[True, True], [True, False], [False, True]]
    np.testing.assert_array_equal(stopping.best_epoch, [2, 5])
    np.testing.assert_array_equal(stopping.epochs, [4, 5])  # probe 0 stopped after epochs 3, 4 without gain
    np.testing.assert_array_equal(stopping.active, [False, True])


@pytest.mark.parametrize("trainer", ["compiled", "batched"])
@pytest.mark.parametrize(
    "names, hidden_sizes",
    [
        (probe_input_names(NUM_LAYERS), (128, 16)),
        (["weighted_average"], (128, 16)),
        (["layer_01", "last"], (128, 16)),
        (["layer_02", "weighted_average"], (7,)),
        (["layer_02", "weighted_average"], (9, 6, 5)),
    ],
    ids=["all inputs", "mix only", "fixed only", "one hidden layer", "three hidden layers"],
)
def test_batched_trainers_match_the_torch_nn_reference(trainer, names, hidden_sizes):
    """Hand-written gradients, AdamW and a probe axis against torch.nn, autograd and torch's AdamW (float64)."""
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    split = fold_split(speakers, folds, 2, 0.15, 0)
    inputs = build_probe_inputs(layers, [split.train], names, dtype=torch.float64)
    settings = ProbeSettings(learning_rate=5e-3, hidden_sizes=hidden_sizes, batch_size=16, patience=2, max_epochs=12)
    batched = train_probes(inputs, labels, [split], [3], NUM_CLASSES, settings, trainer)[0]
    reference = train_probes(inputs, labels, [split], [3], NUM_CLASSES, settings, trainer="reference")[0]
    if len(names) > 2:
        assert len(set(batched.epochs)) > 1, "probes should stop at different epochs for this test to bite"
    np.testing.assert_array_equal(batched.epochs, reference.epochs)
    np.testing.assert_array_equal(batched.best_epoch, reference.best_epoch)
    np.testing.assert_array_equal(batched.predictions, reference.predictions)
    np.testing.assert_allclose(batched.best_validation_loss, reference.best_validation_loss, rtol=1e-9)
    for ours, theirs in zip(batched.parameters, reference.parameters, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-10)
    if "weighted_average" in names:
        np.testing.assert_allclose(batched.layer_weights, reference.layer_weights, rtol=1e-9)
    else:
        assert batched.layer_weights is None and reference.layer_weights is None


def test_batched_and_sequential_trainers_agree_in_float32():
    """Training the probes together changes nothing but rounding: one at a time, by the same code.

    Not bit for bit in general: AdamW's fused kernel rounds a tensor's last few elements (past a
    multiple of the vector width) differently, and where a probe's bias lies in the stacked tensor
    moves (here the 4 classes' biases); with 8 classes, as in bench/probe.py, they agree exactly.
    """
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    split = fold_split(speakers, folds, 2, 0.15, 0)
    inputs = build_probe_inputs(layers, [split.train], probe_input_names(NUM_LAYERS), dtype=torch.float32)
    settings = ProbeSettings(learning_rate=5e-3, batch_size=16, patience=2, max_epochs=12)
    batched = train_probes(inputs, labels, [split], [3], NUM_CLASSES, settings, trainer="batched")[0]
    sequential = train_probes(inputs, labels, [split], [3], NUM_CLASSES, settings, trainer="sequential")[0]
    assert len(set(batched.epochs)) > 1, "probes should stop at different epochs for this test to bite"
    for field in ("epochs", "best_epoch", "predictions"):
        np.testing.assert_array_equal(getattr(batched, field), getattr(sequential, field), err_msg=field)
    np.testing.assert_allclose(batched.best_validation_loss, sequential.best_validation_loss, rtol=1e-6)
    np.testing.assert_allclose(batched.layer_weights, sequential.layer_weights, rtol=1e-6)
    for ours, theirs in zip(batched.parameters, sequential.parameters, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_compiled_trainer_is_the_same_alone_together_and_on_any_thread_count():
    """Each probe's training in the compiled trainer is its own: trained with the others (two
    runs at once) or alone, on one thread or two, bit for bit the same (float32)."""
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    splits = [fold_split(speakers, folds, 2, 0.15, 0), fold_split(speakers, folds, 3, 0.15, 1)]
    names = probe_input_names(NUM_LAYERS)
    inputs = build_probe_inputs(layers, [split.train for split in splits], names, dtype=torch.float32)
    settings = ProbeSettings(learning_rate=5e-3, batch_size=16, patience=2, max_epochs=12)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        together = train_probes(inputs, labels, splits, [3, 4], NUM_CLASSES, settings, "compiled")
        torch.set_num_threads(1)
        alone = [
            [
                train_probes(inputs.run(g).probe(p), labels, [split], [seed], NUM_CLASSES, settings, "compiled")[0]
                for p in range(len(names))
            ]
            for g, (split, seed) in enumerate(zip(splits, [3, 4]))
        ]
    finally:
        torch.set_num_threads(threads)
    assert len(set(together[0].epochs)) > 1, "probes should stop at different epochs for this test to bite"
    for run, probes in zip(together, alone, strict=True):
        for p, single in enumerate(probes):
            for field in ("epochs", "best_epoch", "predictions", "best_validation_loss"):
                np.testing.assert_array_equal(getattr(run, field)[p], getattr(single, field)[0], err_msg=field)
            for ours, theirs in zip(run.parameters, single.parameters, strict=True):
                np.testing.assert_array_equal(ours[p], theirs[0])
        np.testing.assert_array_equal(run.layer_weights, probes[-1].layer_weights)


def test_compiled_trainer_refuses_a_gpu_tensor():
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    split = fold_split(speakers, folds, 2, 0.15, 0)
    inputs = build_probe_inputs(layers, [split.train], ["layer_01"])
    inputs = replace(inputs, features=inputs.features.to("meta"))  # as a CUDA tensor would, without one
    with pytest.raises(ValueError, match="the compiled probe trainer runs on the CPU, not on meta"):
        train_probes(inputs, labels, [split], [0], NUM_CLASSES, FAST, trainer="compiled")


@pytest.mark.parametrize("trainer", ["compiled", "batched"])
def test_runs_of_different_sizes_train_together_as_each_would_alone(trainer):
    """Three runs whose minibatch counts and last batches differ (padding, and AdamW step counts
    that drift apart) and whose validation sets differ in size, against the torch.nn reference
    one probe and one run at a time (float64)."""
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    splits = []
    for test_fold, (num_train, num_validation) in zip((1, 2, 3), ((78, 30), (45, 25), (37, 30))):
        split = fold_split(speakers, folds, test_fold, 0.15, seed=test_fold)
        splits.append(replace(split, train=split.train[:num_train], validation=split.validation[:num_validation]))
    seeds = [3, 4, 5]
    inputs = build_probe_inputs(layers, [split.train for split in splits], probe_input_names(NUM_LAYERS), torch.float64)
    settings = ProbeSettings(learning_rate=5e-3, batch_size=16, patience=2, max_epochs=12)
    batched = train_probes(inputs, labels, splits, seeds, NUM_CLASSES, settings, trainer)
    reference = train_probes(inputs, labels, splits, seeds, NUM_CLASSES, settings, trainer="reference")
    assert len({tuple(run.epochs) for run in batched}) == 3, "runs should stop differently for this test to bite"
    for ours, theirs, split in zip(batched, reference, splits, strict=True):
        assert ours.predictions.shape == (len(inputs.names), split.test.size)
        np.testing.assert_array_equal(ours.epochs, theirs.epochs)
        np.testing.assert_array_equal(ours.best_epoch, theirs.best_epoch)
        np.testing.assert_array_equal(ours.predictions, theirs.predictions)
        np.testing.assert_allclose(ours.best_validation_loss, theirs.best_validation_loss, rtol=1e-9)
        np.testing.assert_allclose(ours.layer_weights, theirs.layer_weights, rtol=1e-9)
        for mine, reference_parameter in zip(ours.parameters, theirs.parameters, strict=True):
            np.testing.assert_allclose(mine, reference_parameter, rtol=1e-7, atol=1e-10)


def test_trainer_wants_a_split_and_a_seed_per_run():
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    split = fold_split(speakers, folds, 2, 0.15, 0)
    inputs = build_probe_inputs(layers, [split.train, split.train], ["layer_01"])
    with pytest.raises(ValueError, match="2 runs of inputs, 1 splits and 1 seeds: give one each"):
        train_probes(inputs, labels, [split], [0], NUM_CLASSES, FAST)


def test_training_logs_progress_and_the_probes_that_stop(monkeypatch, caplog):
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    split = fold_split(speakers, folds, 2, 0.15, 0)
    inputs = build_probe_inputs(layers, [split.train], ["layer_01", "layer_02"])
    monkeypatch.setattr(training, "_PROGRESS_S", 0.0)  # a line every epoch
    with caplog.at_level(logging.INFO, logger="paraprobe"):
        (results,) = train_probes(inputs, labels, [split], [0], NUM_CLASSES, FAST)
    epochs = results.epochs.max()
    lines = [line for line in caplog.messages if line.startswith("probes (ETA if none stops early): ")]
    assert [line.split(": ")[1].split(",")[0] for line in lines] == [f"{e}/40 epochs" for e in range(1, epochs + 1)]
    assert sum("stopped layer_0" in line for line in caplog.messages) == len(set(results.epochs))


def test_unknown_trainer_is_refused():
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    split = fold_split(speakers, folds, 2, 0.15, 0)
    inputs = build_probe_inputs(layers, [split.train], ["layer_01"])
    with pytest.raises(ValueError, match="unknown probe trainer 'fast'; choose from"):
        train_probes(inputs, labels, [split], [0], NUM_CLASSES, FAST, trainer="fast")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_trainer_on_cuda_matches_the_cpu():
    labels, speakers, folds, layers = planted_corpus(num_speakers=8, per_speaker=15)
    splits = [fold_split(speakers, folds, 2, 0.15, 0), fold_split(speakers, folds, 3, 0.15, 1)]
    splits[1] = replace(splits[1], train=splits[1].train[:50])  # runs of different lengths
    names = probe_input_names(NUM_LAYERS)
    results = [
        train_probes(
            build_probe_inputs(layers, [split.train for split in splits], names, dtype=torch.float64, device=device),
            labels,
            splits,
            [0, 1],
            NUM_CLASSES,
            FAST,
        )
        for device in ("cpu", "cuda")
    ]
    for on_cpu, on_cuda in zip(*results, strict=True):
        np.testing.assert_array_equal(on_cpu.predictions, on_cuda.predictions)
        np.testing.assert_allclose(on_cpu.best_validation_loss, on_cuda.best_validation_loss, rtol=1e-7)


# --- one fold's job and its files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_fold(tmp_path_factory) -> dict[str, Path]:
    return probe_fold(tmp_path_factory.mktemp("planted"), probe_input_names(NUM_LAYERS), seeds=[0, 1])


def test_planted_layer_is_found(planted_fold):
    ua = {name: json.loads(path.read_text())["ua"] for name, path in planted_fold.items()}
    assert ua[layer_name(PLANTED_LAYER)] > 0.9
    for index in set(range(NUM_LAYERS + 1)) - {PLANTED_LAYER}:
        assert ua[layer_name(index)] < 0.45, f"noise layer {index} scored {ua[layer_name(index)]}"
    assert ua["last"] < 0.45  # layer 4, noise
    assert ua["weighted_average"] > 0.6  # the mix still carries some noise when validation loss turns
    weights = read_tsv(planted_fold["weighted_average"].parent / "fold1_layer_weights.tsv")
    for _, of_seed in weights.groupby("seed"):
        assert of_seed["weight"].sum() == pytest.approx(1)
        assert of_seed.loc[of_seed["weight"].idxmax(), "layer"] == PLANTED_LAYER
        assert of_seed["weight"].max() > 0.5


def test_fold_json_contract(planted_fold):
    record = json.loads(planted_fold["average"].read_text())
    assert record["corpus"] == "planted" and record["model"] == "RAND" and record["input"] == "average"
    assert record["fold"] == 1 and record["labels"] == ["angry", "happy", "neutral", "sad"]
    assert record["seed"] == [0, 1] and [run["seed"] for run in record["runs"]] == [0, 1]
    assert record["n_test"] == 80
    for run, n_train, n_val, epochs in zip(record["runs"], record["n_train"], record["n_val"], record["epochs"]):
        assert (run["n_train"], run["n_val"], run["epochs"]) == (n_train, n_val, epochs)
        assert n_train + n_val == 240 and n_val == 2 * 20  # 2 of 12 training speakers validate
        assert 1 <= run["best_epoch"] <= run["epochs"] <= FAST.max_epochs
        assert np.sum(run["confusion"]) == 80
        assert run["ua"] == pytest.approx(classification_scores(np.array(run["confusion"]))["ua"])
    for key in ("ua", "wa", "macro_f1"):
        assert record[key] == pytest.approx(np.mean([run[key] for run in record["runs"]]))
    np.testing.assert_array_equal(record["confusion"], np.sum([run["confusion"] for run in record["runs"]], axis=0))


def test_speakers_01_and_1_are_different_speakers(tmp_path):
    # fold 1: speakers 1-4, fold 2: 01-04, fold 3: 001-004, fold 4: 0001-0004 (all 1-4 as numbers)
    _, speakers, folds, _ = planted_corpus()
    names = np.array(["0" * (fold - 1) + str(int(s[3:]) % 4 + 1) for s, fold in zip(speakers, folds)])
    paths = probe_fold(tmp_path, ["average"], [0], manifest_changes={"speaker": names})
    record = json.loads(paths["average"].read_text())
    # One seed: the DESIGN.md fields are that seed's numbers, not lists.
    assert record["seed"] == 0 and record["epochs"] == record["runs"][0]["epochs"]
    assert record["n_test"] == 80 and record["n_train"] + record["n_val"] == 240
    training_speakers = {"0" * zeros + str(n) for zeros in (1, 2, 3) for n in range(1, 5)}
    assert set(record["runs"][0]["validation_speakers"]) <= training_speakers


def single_training_speaker() -> dict:
    _, speakers, folds, _ = planted_corpus()
    return {"speaker": np.where(folds == 1, speakers, "spk99"), "fold": np.where(folds == 1, 1, 2)}


@pytest.mark.parametrize(
    "fold,changes,message",
    [
        (
            5,
            {},
            "{manifest}: fold 5 has no rows (folds present: [1, 2, 3, 4]); "
            "its files may all have been excluded: see {excluded}",
        ),
        (
            1,
            {"speaker": ["spk04"] + [f"spk{i // 20:02d}" for i in range(1, 320)]},
            "{manifest}: folds are not speaker-independent (1 speakers in several folds: "
            "speaker 'spk04' in folds [1, 2])",
        ),
        (1, single_training_speaker(), "{manifest}: fold 1: 1 training speaker(s); a speaker-independent"),
        (1, {"label": "neutral"}, "{manifest}: labels ['neutral']; probing needs at least 2 classes"),
    ],
)
def test_fold_job_errors_name_the_manifest(tmp_path, fold, changes, message):
    manifest = tmp_path / "manifest.tsv"
    with pytest.raises(ValueError) as raised:
        probe_fold(tmp_path, ["average"], [0], fold, changes)
    assert str(raised.value).startswith(message.format(manifest=manifest, excluded=tmp_path / "excluded.tsv"))


def test_classes_missing_from_a_folds_test_or_training_rows_are_warned_about(tmp_path, caplog):
    labels, speakers, folds, _ = planted_corpus()
    names = np.array(["angry", "happy", "neutral", "sad"])[labels]
    # no "sad" in fold 1 (the test fold); "happy" only in fold 1 (never trained on when it is tested)
    relabelled = np.where((folds == 1) & (names == "sad"), "angry", names)
    relabelled = np.where((folds != 1) & (relabelled == "happy"), "neutral", relabelled)
    with caplog.at_level(logging.WARNING, logger="paraprobe"):
        probe_fold(tmp_path, ["average"], [0, 1], manifest_changes={"label": relabelled})
    assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == [
        "fold 1: no test utterance of class(es) sad: its UA averages the other classes' recall",
        "fold 1, seed 0: no training utterance of class(es) happy: never predicted, recall 0",
        "fold 1, seed 1: no training utterance of class(es) happy: never predicted, recall 0",
    ]


def test_a_probe_that_never_reaches_a_finite_validation_loss_stops_the_job_naming_it(tmp_path, monkeypatch):
    def diverging(*args, **kwargs):
        results = train_probes(*args, **kwargs)
        return [replace(r, best_validation_loss=np.where(np.arange(len(r.names)) == 1, np.inf, 0.5)) for r in results]

    monkeypatch.setattr(crossval, "train_probes", diverging)
    with pytest.raises(ValueError) as raised:
        probe_fold(tmp_path, ["average", "layer_02"], [0])
    assert str(raised.value) == (
        "planted/RAND fold 1 seed 0: the probe(s) on layer_02 never reached a finite validation loss "
        f"(diverged: try a lower learning rate than {FAST.learning_rate})"
    )
    assert not (tmp_path / "probes").exists()


def test_same_config_and_seed_give_identical_files(tmp_path, planted_fold):
    again = probe_fold(tmp_path, probe_input_names(NUM_LAYERS), seeds=[0, 1])
    for name, path in planted_fold.items():
        assert again[name].read_bytes() == path.read_bytes()
    weights = "fold1_layer_weights.tsv"
    assert (again["weighted_average"].parent / weights).read_bytes() == (
        planted_fold["weighted_average"].parent / weights
    ).read_bytes()


# --- tables and figures --------------------------------------------------------------------------


def fake_fold_jsons(directory: Path) -> list[Path]:
    """Fold JSONs for 2 corpora x 2 models x 2 folds with UA = 0.5 + 0.05 * layer (+ fold, model shifts)."""
    paths = []
    for corpus in ("iem", "rav"):
        for model_shift, model in enumerate(("PT", "FT")):
            for fold in (1, 2):
                for name in probe_input_names(NUM_LAYERS):
                    index = probe_input_names(NUM_LAYERS).index(name)
                    ua = 0.4 + 0.05 * min(index, 3) + 0.01 * fold + 0.02 * model_shift
                    runs = [{"seed": 0, "ua": ua, "wa": ua, "macro_f1": ua, "epochs": 7}]
                    record = {
                        "corpus": corpus,
                        "model": model,
                        "input": name,
                        "fold": fold,
                        "labels": ["a", "b", "c", "d"],
                        "runs": runs,
                    }
                    path = directory / corpus / model / name / f"fold{fold}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(record))
                    paths.append(path)
    return paths


def test_summary_and_table1(tmp_path):
    write_probe_summary(fake_fold_jsons(tmp_path), tmp_path / "runs.tsv", tmp_path / "probe_ua.tsv")
    summary = read_tsv(tmp_path / "probe_ua.tsv")
    assert list(summary.columns) == ["corpus", "model", "input", "ua_mean", "ua_std", "n"]
    assert len(summary) == 2 * 2 * len(probe_input_names(NUM_LAYERS))
    row = summary[(summary["corpus"] == "rav") & (summary["model"] == "FT") & (summary["input"] == "layer_01")]
    assert row["ua_mean"].item() == pytest.approx(0.4 + 0.05 + 0.015 + 0.02)
    assert row["ua_std"].item() == pytest.approx(np.std([0.01, 0.02], ddof=1))
    assert row["n"].item() == 2
    write_table1(tmp_path / "probe_ua.tsv", tmp_path / "table1.tsv", tmp_path / "table1.md")
    table = read_tsv(tmp_path / "table1.tsv")
    best = table[(table["input"] == "best_layer") & (table["model"] == "PT") & (table["corpus"] == "iem")]
    assert best["layer"].item() == 3  # layers 3 and 4 tie; the first is kept
    assert best["ua_mean_pct"].item() == pytest.approx(100 * (0.4 + 0.15 + 0.015))
    assert list(table["input"][:5]) == ["best_layer", "last", "average", "average_wo_last2", "weighted_average"]
    markdown = (tmp_path / "table1.md").read_text()
    assert "| input | model | iem | rav |" in markdown
    assert "| best layer | PT | 56.50 ± 0.71 (layer 3) | 56.50 ± 0.71 (layer 3) |" in markdown
    assert table1_markdown(table1(summary)) in markdown


def test_figures_are_written(tmp_path):
    json_paths = fake_fold_jsons(tmp_path)
    runs = collect_probe_runs(json_paths)
    write_tsv(runs, tmp_path / "runs.tsv")
    plot_probe_ua(tmp_path / "runs.tsv", tmp_path / "fig1.png")
    assert (tmp_path / "fig1.png").stat().st_size > 10_000
    svg = (tmp_path / "fig1.svg").read_text()
    for text in ("UA (%)", "Layer (0 = CNN encoder output)", "best layer", "chance", "PT", "FT", "iem", "rav"):
        assert text in svg
    assert "best layer: FT 3, PT 3" in svg  # UA rises to layer 3, then stays (the first maximum counts)
    weight_paths = []
    for corpus, model in (("iem", "PT"), ("rav", "PT"), ("rav", "FT")):
        path = tmp_path / f"{corpus}_{model}_weights.tsv"
        weights = np.full(NUM_LAYERS + 1, 0.1)
        weights[PLANTED_LAYER] = 0.6
        write_tsv(
            pd.DataFrame(
                {
                    "corpus": corpus,
                    "model": model,
                    "fold": 1,
                    "seed": 0,
                    "layer": range(NUM_LAYERS + 1),
                    "weight": weights,
                }
            ),
            path,
        )
        weight_paths.append(path)
    write_layer_weights(weight_paths, tmp_path / "weights.tsv", tmp_path / "weights.png")
    summary = read_tsv(tmp_path / "weights.tsv")
    assert summary.loc[summary["weight_mean"].idxmax(), "layer"] == PLANTED_LAYER and len(summary) == 15
    assert (tmp_path / "weights.png").exists()
    assert "Learned layer weight (softmax)" in (tmp_path / "weights.svg").read_text()
