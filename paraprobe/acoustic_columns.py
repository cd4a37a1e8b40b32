"""The acoustic feature sets' names and columns, and the checks of the ``acoustic`` config.

Kept apart from :mod:`paraprobe.acoustic` (which computes the features) because Snakemake
imports it while it parses the workflow: checking a config and planning a DAG must not
import openSMILE, scipy or h5py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from paraprobe.config import ConfigError

EGEMAPS = "egemaps"
MFCC = "mfcc"
FEATURE_SETS = (EGEMAPS, MFCC)

#: The eGeMAPSv02 low-level descriptors in openSMILE's order. Written out so that a
#: config can be checked when the workflow starts, without openSMILE; the extractor
#: refuses to run if openSMILE's names ever differ.
EGEMAPS_COLUMNS = (
    "Loudness_sma3",
    "alphaRatio_sma3",
    "hammarbergIndex_sma3",
    "slope0-500_sma3",
    "slope500-1500_sma3",
    "spectralFlux_sma3",
    "mfcc1_sma3",
    "mfcc2_sma3",
    "mfcc3_sma3",
    "mfcc4_sma3",
    "F0semitoneFrom27.5Hz_sma3nz",
    "jitterLocal_sma3nz",
    "shimmerLocaldB_sma3nz",
    "HNRdBACF_sma3nz",
    "logRelF0-H1-H2_sma3nz",
    "logRelF0-H1-A3_sma3nz",
    "F1frequency_sma3nz",
    "F1bandwidth_sma3nz",
    "F1amplitudeLogRelF0_sma3nz",
    "F2frequency_sma3nz",
    "F2bandwidth_sma3nz",
    "F2amplitudeLogRelF0_sma3nz",
    "F3frequency_sma3nz",
    "F3bandwidth_sma3nz",
    "F3amplitudeLogRelF0_sma3nz",
)
F0_COLUMN = "F0semitoneFrom27.5Hz_sma3nz"

MFCC_NUM_COEFFICIENTS = 13
MFCC_COLUMNS = tuple(f"mfcc{index}" for index in range(MFCC_NUM_COEFFICIENTS))

COLUMNS_BY_SET = {EGEMAPS: EGEMAPS_COLUMNS, MFCC: MFCC_COLUMNS}

#: Each feature set's columns by the parameter groups of its authors, written into the files'
#: ``feature_groups`` attribute so that a file says what its columns measure. eGeMAPS: Eyben et
#: al., IEEE Trans. Affective Computing 7(2), 2016, sec. 3 (GeMAPS's frequency, energy/amplitude
#: and spectral-balance parameters; eGeMAPS adds MFCC 1-4, spectral flux and the formant 2-3
#: bandwidths). The similarity jobs use ``acoustic.groups`` from the config instead (by default
#: the paper's three groups), so that changing those does not recompute the features.
INTRINSIC_GROUPS = {
    EGEMAPS: {
        "frequency": (
            "F0semitoneFrom27.5Hz_sma3nz",
            "jitterLocal_sma3nz",
            "F1frequency_sma3nz",
            "F1bandwidth_sma3nz",
            "F2frequency_sma3nz",
            "F2bandwidth_sma3nz",
            "F3frequency_sma3nz",
            "F3bandwidth_sma3nz",
        ),
        "energy_amplitude": ("Loudness_sma3", "shimmerLocaldB_sma3nz", "HNRdBACF_sma3nz"),
        "spectral_balance": (
            "alphaRatio_sma3",
            "hammarbergIndex_sma3",
            "slope0-500_sma3",
            "slope500-1500_sma3",
            "logRelF0-H1-H2_sma3nz",
            "logRelF0-H1-A3_sma3nz",
            "F1amplitudeLogRelF0_sma3nz",
            "F2amplitudeLogRelF0_sma3nz",
            "F3amplitudeLogRelF0_sma3nz",
        ),
        "cepstral": ("mfcc1_sma3", "mfcc2_sma3", "mfcc3_sma3", "mfcc4_sma3"),
        "spectral_dynamics": ("spectralFlux_sma3",),
    },
    MFCC: {"log_energy": ("mfcc0",), "cepstral": MFCC_COLUMNS[1:]},
}


def validate_groups(
    groups: Mapping[str, Sequence[str]], config_key: str = "acoustic.groups"
) -> dict[str, tuple[str, list[str]]]:
    """Check feature groups against the real column names (:data:`COLUMNS_BY_SET`).

    Parameters
    ----------
    groups
        group name -> column names, as in the config.
    config_key
        Where ``groups`` came from, for error messages.

    Returns
    -------
    dict
        group name -> (feature set, columns), in the order given.

    Raises
    ------
    paraprobe.config.ConfigError
        Naming ``<config_key>.<group>`` and the column when a column is unknown, listed
        twice, or from another feature set than the group's first column, or when a
        group is empty.
    """
    set_of_column = {column: name for name, columns in COLUMNS_BY_SET.items() for column in columns}
    validated: dict[str, tuple[str, list[str]]] = {}
    for group, columns in groups.items():
        key = f"{config_key}.{group}"
        if not columns:
            raise ConfigError(f"{key}: the group has no columns")
        seen: set[str] = set()
        for column in columns:
            if column not in set_of_column:
                known = "; ".join(f"{name}: {', '.join(names)}" for name, names in COLUMNS_BY_SET.items())
                raise ConfigError(f"{key}: unknown column {column!r} (the columns are {known})")
            if column in seen:
                raise ConfigError(f"{key}: column {column!r} is listed more than once")
            if set_of_column[column] != set_of_column[columns[0]]:
                raise ConfigError(
                    f"{key}: column {column!r} is a {set_of_column[column]} column but {columns[0]!r} is a "
                    f"{set_of_column[columns[0]]} column; a group's columns come from one feature set"
                )
            seen.add(column)
        validated[group] = (set_of_column[columns[0]], list(columns))
    return validated


def check_acoustic_config(acoustic: Mapping, config_key: str = "acoustic") -> None:
    """What the JSON schema cannot check in the ``acoustic`` config section.

    Raises :class:`paraprobe.config.ConfigError`, naming the key, for a group column that
    does not exist (see :func:`validate_groups`) or a stride list whose length differs
    from the kernel list's.
    """
    validate_groups(acoustic["groups"], f"{config_key}.groups")
    kernels, strides = acoustic["conv_kernel"], acoustic["conv_stride"]
    if len(kernels) != len(strides):
        raise ConfigError(
            f"{config_key}.conv_stride: {len(strides)} strides for the {len(kernels)} kernels of {config_key}.conv_kernel"
        )
