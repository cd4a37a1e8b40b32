"""paraprobe.similarity on small fake inputs written exactly to DESIGN.md's file contracts."""

import logging

import h5py
import numpy as np
import pandas as pd
import pytest

from paraprobe import cca, similarity_figures
from paraprobe.io import read_tsv, write_tsv
from paraprobe.similarity_figures import collect, draw_figure, layer_table, table3_layers, write_layer_table
from paraprobe.similarity import (
    ANALYSES,
    SimilarityInputs,
    SimilaritySettings,
    run_similarity,
    window_means,
)

NUM_LAYERS = 3  # transformer layers: hidden states layer_00..layer_03
DIMS = 6
EGEMAPS_COLUMNS = [
    "Loudness_sma3",
    "HNRdBACF_sma3nz",
    "F0semitoneFrom27.5Hz_sma3nz",
    "F1frequency_sma3nz",
    "alphaRatio_sma3",
    "hammarbergIndex_sma3",
    "jitterLocal_sma3nz",
]
MFCC_COLUMNS = ["mfcc_1", "mfcc_2", "mfcc_3", "mfcc_4"]
GROUPS = {
    "energy": EGEMAPS_COLUMNS[:2],
    "frequency": EGEMAPS_COLUMNS[2:4],
    "spectral": EGEMAPS_COLUMNS[4:6],
    "voice_quality": EGEMAPS_COLUMNS[6:],
    "egemaps_all": EGEMAPS_COLUMNS,
    "mfcc": MFCC_COLUMNS,
}
LABELS = ["ang", "neu", "sad"]


class FakeCorpus:
    """12 utterances, 9 of them in the embedding frame subset; acoustic frames for all 12.

    Layers are noisy linear mixtures of the acoustic features, noisier with depth, so
    similarities differ between layers and groups.
    """

    def __init__(self, root, seed=0, mismatch=None):
        rng = np.random.default_rng(seed)
        self.utt_ids = [f"utt{i:02d}" for i in range(12)]
        self.frames = rng.integers(40, 160, size=12)
        self.in_subset = np.array([i not in (2, 7, 8) for i in range(12)])
        self.labels = [LABELS[i % 3] for i in range(12)]
        self.egemaps = [
            rng.standard_normal((n, len(EGEMAPS_COLUMNS))).astype(np.float32) * 30 + 100 for n in self.frames
        ]
        self.mfcc = [rng.standard_normal((n, len(MFCC_COLUMNS))).astype(np.float32) for n in self.frames]
        self.voiced = [rng.random(n) < 0.7 for n in self.frames]
        mixing = rng.standard_normal((NUM_LAYERS + 1, len(EGEMAPS_COLUMNS) + len(MFCC_COLUMNS), DIMS))
        self.layers = [
            [
                (
                    np.concatenate([(e - 100) / 30, m], axis=1) @ mixing[layer]
                    + (layer + 1) * rng.standard_normal((len(e), DIMS))
                ).astype(np.float16)
                for e, m in zip(self.egemaps, self.mfcc)
            ]
            for layer in range(NUM_LAYERS + 1)
        ]
        self.inputs = SimilarityInputs(
            embeddings=root / "embeddings.h5",
            egemaps=root / "egemaps.h5",
            mfcc=root / "mfcc.h5",
            manifest=root / "manifest.tsv",
        )
        write_tsv(
            pd.DataFrame(
                {
                    "utt_id": self.utt_ids,
                    "path": [f"/data/{u}.wav" for u in self.utt_ids],
                    "label": self.labels,
                    "speaker": ["s1"] * 12,
                    "fold": [0] * 12,
                    "duration_s": self.frames / 50.0,
                    "sha1": ["0" * 40] * 12,
                }
            ),
            self.inputs.manifest,
        )
        subset_frames = np.where(self.in_subset, self.frames, 0)
        with h5py.File(self.inputs.embeddings, "w") as handle:
            handle["utt_id"] = np.array(self.utt_ids, dtype=h5py.string_dtype())
            handle["frame_offsets"] = np.concatenate([[0], np.cumsum(subset_frames)]).astype(np.int64)
            for layer in range(NUM_LAYERS + 1):
                frames = [self.layers[layer][i] for i in range(12) if self.in_subset[i]]
                handle[f"frames/layer_{layer:02d}"] = np.concatenate(frames)
                handle[f"pooled/layer_{layer:02d}"] = np.stack(
                    [x.astype(np.float32).mean(0) for x in self.layers[layer]]
                )
            handle.attrs.update(model="fake", revision="0", num_layers=NUM_LAYERS, frame_rate_hz=50.0)
        for path, values, columns in (
            (self.inputs.egemaps, self.egemaps, EGEMAPS_COLUMNS),
            (self.inputs.mfcc, self.mfcc, MFCC_COLUMNS),
        ):
            if mismatch is not None and path == self.inputs.mfcc:
                values = list(values)
                values[mismatch] = values[mismatch][:-1]
            with h5py.File(path, "w") as handle:
                handle["utt_id"] = np.array(self.utt_ids, dtype=h5py.string_dtype())
                handle["values"] = np.concatenate(values)
                handle["frame_offsets"] = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int64)
                handle["columns"] = np.array(columns, dtype=h5py.string_dtype())
                handle["voiced"] = np.concatenate(self.voiced[: len(values)]).astype(np.uint8)

    def utterances(self, label=None, voiced_only=False):
        chosen = [i for i in range(12) if self.in_subset[i] and (label is None or self.labels[i] == label)]
        masks = [self.voiced[i] if voiced_only else np.ones(self.frames[i], bool) for i in chosen]
        return chosen, masks

    def layer_frames(self, layer, label=None, voiced_only=False):
        chosen, masks = self.utterances(label, voiced_only)
        return np.concatenate([self.layers[layer][i].astype(np.float64)[m] for i, m in zip(chosen, masks)])

    def feature_frames(self, columns, label=None, voiced_only=False):
        chosen, masks = self.utterances(label, voiced_only)
        table = [np.concatenate([self.egemaps[i], self.mfcc[i]], axis=1)[m] for i, m in zip(chosen, masks)]
        names = EGEMAPS_COLUMNS + MFCC_COLUMNS
        return np.concatenate(table).astype(np.float64)[:, [names.index(c) for c in columns]]

    def windowed(self, data, window):
        """Independent window means: per utterance, reshape its complete windows."""
        chosen, _ = self.utterances()
        pieces, start = [], 0
        for i in chosen:
            rows = data[start : start + self.frames[i]]
            start += self.frames[i]
            complete = len(rows) // window * window
            pieces.append(rows[:complete].reshape(-1, window, data.shape[1]).mean(axis=1))
        return np.concatenate(pieces)


def zscored(features):
    """The analysis z-scores acoustic columns (their units differ) before every method."""
    return (features - features.mean(axis=0)) / features.std(axis=0)


def outputs(root):
    return {name: root / f"{name}.tsv" for name in ANALYSES}


@pytest.fixture
def corpus(tmp_path):
    return FakeCorpus(tmp_path)


def run(corpus, root, **settings):
    settings = SimilaritySettings(methods=cca.METHODS, device="cpu", chunk_frames=100, **settings)
    run_similarity(corpus.inputs, GROUPS, settings, outputs(root))
    return {name: read_tsv(path) for name, path in outputs(root).items()}


def value(table, method, **keys):
    selected = table[table["method"] == method]
    for key, wanted in keys.items():
        selected = selected[selected[key] == wanted]
    assert len(selected) == 1, (method, keys)
    return selected.iloc[0]


def test_tables_follow_the_contract(corpus, tmp_path):
    tables = run(corpus, tmp_path)
    extra = ["method", "value", "n_frames", "n_dims", "frames_per_dim", "held_out"]
    assert list(tables["features"].columns) == ["layer", "feature_group"] + extra
    assert list(tables["layers"].columns) == ["layer_a", "layer_b"] + extra
    assert list(tables["hierarchy"].columns) == ["layer", "level"] + extra
    assert list(tables["emotion"].columns) == ["layer", "label"] + extra
    states, methods = NUM_LAYERS + 1, len(cca.METHODS)
    assert len(tables["features"]) == states * len(GROUPS) * methods
    assert len(tables["layers"]) == states * states * methods
    assert len(tables["hierarchy"]) == states * 3 * methods
    assert len(tables["emotion"]) == states * len(LABELS) * methods
    assert set(tables["hierarchy"]["level"]) == {"frame", "phoneme", "word"}
    assert set(tables["emotion"]["label"]) == set(LABELS)
    for table in tables.values():
        assert table["value"].between(0, 1).all()
        assert table["held_out"].isna().all()  # held-out estimation is off by default
        np.testing.assert_allclose(table["frames_per_dim"], table["n_frames"] / table["n_dims"])
    subset_frames = int(corpus.frames[corpus.in_subset].sum())
    assert (tables["features"]["n_frames"] == subset_frames).all()
    energy = value(tables["features"], "cca", layer=0, feature_group="energy")
    assert energy["n_dims"] == DIMS + 2
    phoneme_windows = int((corpus.frames[corpus.in_subset] // 5).sum())
    assert (tables["hierarchy"].query("level == 'phoneme'")["n_frames"] == phoneme_windows).all()
    word_windows = int((corpus.frames[corpus.in_subset] // 25).sum())
    assert (tables["hierarchy"].query("level == 'word'")["n_frames"] == word_windows).all()


def test_values_equal_in_memory_computations_on_the_same_frames(corpus, tmp_path):
    tables = run(corpus, tmp_path)
    reference = EGEMAPS_COLUMNS
    for method in cca.METHODS:
        for layer in (0, NUM_LAYERS):
            for group in ("energy", "mfcc"):
                features = zscored(corpus.feature_frames(GROUPS[group]))
                expected = cca.similarity(corpus.layer_frames(layer), features, method)
                got = value(tables["features"], method, layer=layer, feature_group=group)["value"]
                assert got == pytest.approx(expected, abs=1e-4), (method, layer, group)
        for a, b in ((0, 2), (2, 0), (1, 1)):
            expected = cca.similarity(corpus.layer_frames(a), corpus.layer_frames(b), method)
            assert value(tables["layers"], method, layer_a=a, layer_b=b)["value"] == pytest.approx(expected, abs=1e-4)
        layer = 1
        frames_x, frames_y = corpus.layer_frames(layer), corpus.feature_frames(reference)
        for level, window in (("frame", 1), ("phoneme", 5), ("word", 25)):
            windows_y = zscored(corpus.windowed(frames_y, window))
            expected = cca.similarity(corpus.windowed(frames_x, window), windows_y, method)
            got = value(tables["hierarchy"], method, layer=layer, level=level)["value"]
            assert got == pytest.approx(expected, abs=1e-4), (method, level)
        for label in LABELS:
            expected = cca.similarity(
                corpus.layer_frames(layer, label), zscored(corpus.feature_frames(reference, label)), method
            )
            assert value(tables["emotion"], method, layer=layer, label=label)["value"] == pytest.approx(
                expected, abs=1e-4
            )


def test_acoustic_columns_are_standardized_so_units_do_not_decide_cka(corpus, tmp_path):
    tables = run(corpus, tmp_path)
    x, y = corpus.layer_frames(0), corpus.feature_frames(EGEMAPS_COLUMNS)
    y_in_other_units = y * np.linspace(1, 1000, y.shape[1])  # e.g. Hz instead of kHz for some columns
    standardized = cca.similarity(x, zscored(y), "cka")
    assert value(tables["features"], "cka", layer=0, feature_group="egemaps_all")["value"] == pytest.approx(
        standardized, abs=1e-6
    )
    assert abs(cca.similarity(x, y_in_other_units, "cka") - standardized) > 1e-3


def test_pwcca_layer_pairs_are_reported_in_both_orders(corpus, tmp_path):
    tables = run(corpus, tmp_path)
    forward = value(tables["layers"], "pwcca", layer_a=0, layer_b=3)["value"]
    backward = value(tables["layers"], "pwcca", layer_a=3, layer_b=0)["value"]
    assert forward != pytest.approx(backward, abs=1e-6)  # equal dims: weights from the first layer
    assert value(tables["layers"], "cca", layer_a=0, layer_b=3)["value"] == pytest.approx(
        value(tables["layers"], "cca", layer_a=3, layer_b=0)["value"]
    )


def test_voiced_only_keeps_voiced_frames(corpus, tmp_path):
    tables = run(corpus, tmp_path, voiced_only=True)
    chosen, masks = corpus.utterances(voiced_only=True)
    assert (tables["features"]["n_frames"] == sum(int(m.sum()) for m in masks)).all()
    features = zscored(corpus.feature_frames(GROUPS["frequency"], voiced_only=True))
    for method in cca.METHODS:
        expected = cca.similarity(corpus.layer_frames(2, voiced_only=True), features, method)
        assert value(tables["features"], method, layer=2, feature_group="frequency")["value"] == pytest.approx(
            expected, abs=1e-4
        )
    phoneme_windows = sum(int(m.sum()) // 5 for m in masks)
    assert (tables["hierarchy"].query("level == 'phoneme'")["n_frames"] == phoneme_windows).all()


def held_out_cca(x_fit, y_fit, x_score, y_score) -> float:
    """Mean held-out canonical correlation, computed directly: CCA directions from whitened SVD
    of the fit rows, then the Pearson correlation of each pair of variates on the score rows."""

    def inverse_root(covariance):
        values, vectors = np.linalg.eigh(covariance)
        return vectors @ np.diag(values**-0.5) @ vectors.T

    x_fit, y_fit = x_fit - x_fit.mean(0), y_fit - y_fit.mean(0)
    wx, wy = inverse_root(x_fit.T @ x_fit), inverse_root(y_fit.T @ y_fit)
    u, _, vt = np.linalg.svd(wx @ (x_fit.T @ y_fit) @ wy)
    k = min(x_fit.shape[1], y_fit.shape[1])
    a, b = wx @ u[:, :k], wy @ vt.T[:, :k]
    return float(np.mean([np.corrcoef(x_score @ a[:, i], y_score @ b[:, i])[0, 1] for i in range(k)]))


def test_held_out_column_when_enabled(corpus, tmp_path):
    tables = run(corpus, tmp_path, held_out=True, held_out_fraction=0.3)
    features = tables["features"]
    fitted = features[features["method"] != "cka"]
    assert fitted["held_out"].notna().all() and fitted["held_out"].between(-1, 1).all()
    assert features.loc[features["method"] == "cka", "held_out"].isna().all()
    # In-sample values still use every frame.
    assert (features["n_frames"] == int(corpus.frames[corpus.in_subset].sum())).all()
    # The held-out share: 3 of the 9 utterances with frames, chosen by the seed (0).
    subset = np.flatnonzero(corpus.in_subset)
    scored = set(subset[np.random.default_rng(0).choice(len(subset), size=3, replace=False)])
    rows = np.concatenate([np.full(corpus.frames[i], i in scored) for i in subset])
    names = EGEMAPS_COLUMNS
    for layer in (0, 2):
        x, y = corpus.layer_frames(layer), corpus.feature_frames(names)
        expected = held_out_cca(x[~rows], y[~rows], x[rows], y[rows])
        got = value(features, "cca", layer=layer, feature_group="egemaps_all")
        assert got["held_out"] == pytest.approx(expected, abs=1e-4) and got["held_out"] != got["value"]


def test_few_frames_per_dimension_is_warned_about(corpus, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="paraprobe"):
        run(corpus, tmp_path)
    # Word level: about 40 windows of 25 frames against 6 + 7 dimensions.
    assert any(
        "hierarchy:" in record.message
        and "fewer than 10 frames per dimension" in record.message
        and record.message.endswith("enable similarity.held_out for held-out estimates")
        for record in caplog.records
    )


def test_frame_count_mismatch_names_the_utterance_and_both_files(tmp_path):
    corpus = FakeCorpus(tmp_path, mismatch=4)
    with pytest.raises(ValueError, match=r"utt04.*embeddings\.h5.*mfcc\.h5"):
        run(corpus, tmp_path)


def test_acoustic_features_on_another_frame_grid_are_refused(corpus, tmp_path):
    wav2vec2 = {"conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2]}
    for path in (corpus.inputs.embeddings, corpus.inputs.egemaps, corpus.inputs.mfcc):
        with h5py.File(path, "a") as handle:
            handle.attrs.update(wav2vec2)
    run(corpus, tmp_path)  # the same grid
    with h5py.File(corpus.inputs.mfcc, "a") as handle:
        handle.attrs["conv_kernel"] = [11, 3, 3, 3, 3, 2, 2]  # another receptive field, the same hop
    with pytest.raises(ValueError) as raised:
        run(corpus, tmp_path)
    assert str(raised.value) == (
        f"{corpus.inputs.mfcc}: conv_kernel [11, 3, 3, 3, 3, 2, 2] differs from the model's [10, 3, 3, 3, 3, 2, 2] "
        f"in {corpus.inputs.embeddings}: its frames are not the model's (set acoustic.conv_kernel to the model's)"
    )


def test_missing_layer_in_the_embeddings_is_named(corpus, tmp_path):
    with h5py.File(corpus.inputs.embeddings, "a") as handle:
        del handle["frames/layer_02"]
    with pytest.raises(ValueError, match=r"embeddings\.h5: missing dataset 'frames/layer_02' \(num_layers is 3\)"):
        run(corpus, tmp_path)


def test_ambiguous_or_unknown_feature_columns_are_rejected(corpus, tmp_path):
    settings = SimilaritySettings(device="cpu")
    with pytest.raises(ValueError, match="'nope' is in none of"):
        run_similarity(corpus.inputs, {**GROUPS, "energy": ["nope"]}, settings, outputs(tmp_path))
    with h5py.File(corpus.inputs.mfcc, "a") as handle:  # an mfcc column now also named like an eGeMAPS one
        del handle["columns"]
        handle["columns"] = np.array(["Loudness_sma3"] + MFCC_COLUMNS[1:], dtype=h5py.string_dtype())
    with pytest.raises(ValueError, match="'egemaps:Loudness_sma3' or 'mfcc:Loudness_sma3'"):
        run_similarity(corpus.inputs, GROUPS, settings, outputs(tmp_path))
    qualified = {**GROUPS, "energy": ["egemaps:Loudness_sma3", "HNRdBACF_sma3nz"], "mfcc": MFCC_COLUMNS[1:]}
    qualified["egemaps_all"] = ["egemaps:Loudness_sma3"] + EGEMAPS_COLUMNS[1:]
    run_similarity(corpus.inputs, qualified, settings, outputs(tmp_path))


def test_window_means_never_cross_utterances():
    lengths = [7, 3, 12, 5]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    # Every row of utterance i holds i, so any window mixing utterances has a non-integer mean.
    values = np.repeat(np.arange(len(lengths), dtype=np.float64), lengths)[:, None] * [1.0, 10.0]
    means, window_offsets = window_means(values, offsets, 5)
    np.testing.assert_array_equal(window_offsets, [0, 1, 1, 3, 4])  # trailing partial windows dropped
    np.testing.assert_array_equal(means[:, 0], [0, 2, 2, 3])
    ramp = np.arange(27, dtype=np.float64)[:, None]
    ramp_means, _ = window_means(ramp, offsets, 5)
    np.testing.assert_array_equal(ramp_means[:, 0], [2, 12, 17, 24])  # rows 0-4, 10-14, 15-19, 22-26


def test_settings_from_config_and_their_errors():
    settings = SimilaritySettings.from_config(
        {
            "methods": ["cca", "svcca"],
            "held_out": {"enabled": True, "fraction": 0.25, "seed": 3},
            "hierarchy": {"phoneme_frames": 4, "word_phonemes": 6},
            "device": "cpu",
        }
    )
    assert settings.methods == ("cca", "svcca") and settings.held_out and settings.held_out_seed == 3
    assert (settings.phoneme_frames, settings.word_phonemes) == (4, 6)
    assert settings.ridge == cca.DEFAULT_RIDGE and settings.reference_group == "egemaps_all"
    with pytest.raises(ValueError, match="similarity.methods"):
        SimilaritySettings(methods=("cca", "rsa"))
    with pytest.raises(ValueError, match="held_out.fraction"):
        SimilaritySettings(held_out_fraction=1.0)


# -- figures and Table 3 --


def fake_tables(root, corpora=("iemocap", "ravdess"), models=("PT", "FT960"), states=13):
    """features/layers/hierarchy/emotion tables per (corpus, model) with known values."""
    rng = np.random.default_rng(2)
    paths = {name: [] for name in ANALYSES}
    for corpus in corpora:
        for model in models:
            folder = root / corpus / model
            rows = {
                "features": [{"layer": l, "feature_group": g} for l in range(states) for g in GROUPS],
                "layers": [{"layer_a": a, "layer_b": b} for a in range(states) for b in range(states)],
                "hierarchy": [{"layer": l, "level": v} for l in range(states) for v in ("frame", "phoneme", "word")],
                "emotion": [{"layer": l, "label": e} for l in range(states) for e in LABELS],
            }
            for name, keys in rows.items():
                table = pd.DataFrame([{**key, "method": m} for key in keys for m in ("cca", "cka")])
                table["value"] = rng.uniform(0, 1, len(table))
                write_tsv(table, folder / f"{name}.tsv")
                paths[name].append(folder / f"{name}.tsv")
    pairs = [(c, m) for c in corpora for m in models]
    return paths, [c for c, _ in pairs], [m for _, m in pairs]


@pytest.mark.parametrize(
    "figure, analysis",
    [
        ("fig2_feature_cca", "features"),
        ("fig3_layer_cca", "layers"),
        ("fig4_hierarchy", "hierarchy"),
        ("fig5_emotion_cca", "emotion"),
    ],
)
def test_figures_are_written_as_png_and_svg(tmp_path, figure, analysis):
    paths, corpora, models = fake_tables(tmp_path)
    png = tmp_path / "figures" / f"{figure}.png"
    draw_figure(figure, paths[analysis], corpora, models, png, method="cca")
    assert png.read_bytes().startswith(b"\x89PNG")
    svg = png.with_suffix(".svg").read_text()
    assert "<svg" in svg and "Layer" in svg and "FT960 · ravdess" in svg
    with pytest.raises(ValueError, match="no 'pwcca' rows"):
        draw_figure(figure, paths[analysis], corpora, models, png, method="pwcca")


def drawn_figure(monkeypatch, figure, table, tmp_path, **options):
    """The matplotlib figure :func:`draw_figure` makes of ``table`` (one corpus x model per table
    row group) with ``options``, kept open instead of saved."""
    kept = []
    monkeypatch.setattr(similarity_figures, "save_figure", lambda drawn, path: kept.append(drawn))
    paths, corpora, models = [], [], []
    for (corpus, model), part in table.groupby(["corpus", "model"], sort=False):
        paths.append(tmp_path / f"{corpus}_{model}.tsv")
        write_tsv(part.drop(columns=["corpus", "model"]), paths[-1])
        corpora.append(corpus)
        models.append(model)
    draw_figure(figure, paths, corpora, models, tmp_path / "figure.png", **options)
    return kept[0]


def test_line_figures_draw_held_out_values_and_a_legend_of_every_panels_lines(tmp_path, monkeypatch):
    rows = [
        {"corpus": corpus, "model": "PT", "layer": layer, "label": label, "method": "cca"}
        for corpus, labels in (("iemocap", ("angry", "sad")), ("ravdess", ("angry", "calm", "sad")))
        for label in labels
        for layer in (0, 1)
    ]
    table = pd.DataFrame(rows).assign(value=0.9, held_out=np.linspace(0.1, 0.2, len(rows)))
    drawn = drawn_figure(monkeypatch, "fig5_emotion_cca", table, tmp_path)
    assert [text.get_text() for text in drawn.legends[0].get_texts()] == ["angry", "calm", "sad"]
    ravdess = drawn.axes[1]
    assert ravdess.get_title() == "PT · ravdess" and ravdess.get_ylabel() == "Held-out CCA with eGeMAPS"
    assert ravdess.get_xlabel() == "Layer (0 = CNN encoder output)"
    calm = table.query("corpus == 'ravdess' and label == 'calm'")["held_out"].tolist()
    assert [line.get_ydata().tolist() for line in ravdess.lines if line.get_label() == "calm"] == [calm]
    for missing in (table.index, table.index[:1]):  # none, or one point without a held-out estimate
        in_sample = drawn_figure(
            monkeypatch,
            "fig5_emotion_cca",
            table.assign(held_out=table["held_out"].where(~table.index.isin(missing))),
            tmp_path,
        )
        assert {y for axis in in_sample.axes[:2] for line in axis.lines for y in line.get_ydata()} == {0.9}
        assert in_sample.axes[0].get_ylabel() == "CCA with eGeMAPS"
    with_mfcc = drawn_figure(monkeypatch, "fig5_emotion_cca", table, tmp_path, reference_group="mfcc")
    assert with_mfcc.axes[0].get_ylabel() == "Held-out CCA with 'mfcc'"


def test_hierarchy_figure_draws_differences_of_held_out_values(tmp_path, monkeypatch):
    levels = {"frame": (0.2, 0.1), "phoneme": (0.4, 0.15), "word": (0.7, 0.12)}  # (in-sample, held out)
    table = pd.DataFrame(
        [
            {
                "corpus": "iemocap",
                "model": "PT",
                "layer": layer,
                "level": level,
                "method": "cca",
                "value": v,
                "held_out": h,
            }
            for layer in (0, 1)
            for level, (v, h) in levels.items()
        ]
    )
    drawn = drawn_figure(monkeypatch, "fig4_hierarchy", table, tmp_path)
    differences = {
        line.get_label(): line.get_ydata().tolist() for line in drawn.axes[0].lines if line.get_label()[0] != "_"
    }
    assert differences == {"phoneme − frame": [pytest.approx(0.05)] * 2, "word − phoneme": [pytest.approx(-0.03)] * 2}
    assert drawn.axes[0].get_ylabel() == "Difference in held-out CCA\nwith eGeMAPS"
    with_mfcc = drawn_figure(monkeypatch, "fig4_hierarchy", table, tmp_path, reference_group="mfcc")
    assert with_mfcc.axes[0].get_ylabel() == "Difference in held-out CCA\nwith 'mfcc'"


def test_table3_compares_the_last_two_layers_with_the_middle_ones(tmp_path):
    assert table3_layers(12) == ([11, 12], [6, 7, 8, 9, 10])
    assert table3_layers(4) == ([3, 4], [2])
    assert table3_layers(2) == ([1, 2], [0])
    paths, corpora, models = fake_tables(tmp_path)
    layers = collect(paths["layers"], corpora, models)
    table = write_layer_table(layers, tmp_path / "t3.tsv", tmp_path / "t3.md")
    assert list(table.columns) == ["corpus", "method", "layer", "model", "L6", "L7", "L8", "L9", "L10"]
    assert len(table) == 2 * 2 * 2 * 2  # corpora x methods x last two layers x models
    row = table[(table["corpus"] == "ravdess") & (table["model"] == "PT") & (table["method"] == "cka")]
    row = row[row["layer"] == 11].iloc[0]
    source = layers.query(
        "corpus == 'ravdess' and model == 'PT' and method == 'cka' and layer_a == 11 and layer_b == 8"
    )
    assert row["L8"] == pytest.approx(source["value"].iloc[0])
    pd.testing.assert_frame_equal(read_tsv(tmp_path / "t3.tsv"), table.reset_index(drop=True), check_dtype=False)
    markdown = (tmp_path / "t3.md").read_text()
    assert "| layer | model | L6 | L7 | L8 | L9 | L10 |" in markdown
    assert f"| 11 | PT | " in markdown and f"{row['L8']:.2f}" in markdown


def test_table3_leaves_cells_empty_for_a_shallower_model(tmp_path):
    deep, corpora, models = fake_tables(tmp_path / "deep", corpora=("iemocap",), models=("PT",))
    shallow, _, _ = fake_tables(tmp_path / "shallow", corpora=("iemocap",), models=("TINY",), states=5)
    layers = collect(deep["layers"] + shallow["layers"], ["iemocap", "iemocap"], ["PT", "TINY"])
    table = layer_table(layers)
    tiny = table[table["model"] == "TINY"]
    assert list(tiny["layer"].unique()) == [3, 4]
    assert tiny["L2"].notna().all() and tiny[["L6", "L10"]].isna().all().all()
