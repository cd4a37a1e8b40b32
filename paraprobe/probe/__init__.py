"""Probing: how well a small classifier recovers the labels from each layer, or mix of layers.

Modules: :mod:`~paraprobe.probe.inputs` (what a probe sees), :mod:`~paraprobe.probe.splits`
(speaker-independent folds), :mod:`~paraprobe.probe.training` (batched and reference trainers),
:mod:`~paraprobe.probe.metrics` (UA, WA, macro F1), :mod:`~paraprobe.probe.crossval` (one fold's
job and its files), :mod:`~paraprobe.probe.report` (tables and figures).
"""
