"""Progress lines for long jobs: items done, rate, ETA, written to a job's log."""

from __future__ import annotations

import logging
import sys
import time


def format_duration(seconds: float) -> str:
    """``3725`` -> ``'1h02m05s'``; ``65`` -> ``'1m05s'``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Log "done/total <unit>, rate, ETA" at most every ``interval_s`` seconds, and at the end.

    ``audio_seconds_total`` (optional) adds the real-time factor: audio seconds per second.
    """

    def __init__(
        self,
        total: int,
        unit: str = "utterances",
        audio_seconds_total: float | None = None,
        logger: logging.Logger | None = None,
        interval_s: float = 10.0,
        label: str = "",
    ):
        self.total = total
        self.unit = unit
        self.audio_seconds_total = audio_seconds_total
        self.logger = logger or logging.getLogger("paraprobe")
        self.interval_s = interval_s
        self.label = f"{label}: " if label else ""
        self.done = 0
        self.audio_seconds_done = 0.0
        self.start = time.perf_counter()
        self._last_report = self.start

    def update(self, items: int = 1, audio_seconds: float = 0.0) -> None:
        self.done += items
        self.audio_seconds_done += audio_seconds
        now = time.perf_counter()
        if now - self._last_report >= self.interval_s or self.done >= self.total:
            self._last_report = now
            self.logger.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.label}{self.done}/{self.total} {self.unit}", f"{rate:.1f} {self.unit}/s"]
        if self.audio_seconds_total:
            parts.append(f"{self.audio_seconds_done / elapsed:.1f} audio s/s")
            fraction = self.audio_seconds_done / self.audio_seconds_total
        else:
            fraction = self.done / self.total if self.total else 1.0
        remaining = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        eta = format_duration(remaining) if remaining == remaining else "?"
        parts.append(f"elapsed {format_duration(elapsed)}, ETA {eta}")
        return ", ".join(parts)


#: Libraries that keep their log records from the root logger (``propagate = False``); the job's
#: log file is attached to them directly.
_NON_PROPAGATING_LOGGERS = ("transformers",)


def setup_job_logging(log_path: str | None) -> logging.Logger:
    """Send a job's logging to its log file (and stderr), once per process; return paraprobe's logger.

    paraprobe's messages from INFO up; other libraries' warnings and Python warnings
    (``warnings.warn``) too, so that the log file holds everything that explains a job.
    """
    logger = logging.getLogger("paraprobe")
    logger.setLevel(logging.INFO)
    root = logging.getLogger()
    if not getattr(root, "paraprobe_job_logging", False):
        root.paraprobe_job_logging = True
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        handlers: list[logging.Handler] = [logging.StreamHandler()]
        if log_path:
            handlers.append(logging.FileHandler(log_path, mode="w"))
        for handler in handlers:
            handler.setFormatter(formatter)
            root.addHandler(handler)
        root.setLevel(logging.WARNING)
        for name in _NON_PROPAGATING_LOGGERS:  # they print to stderr themselves
            for handler in handlers[1:]:
                logging.getLogger(name).addHandler(handler)
        logging.captureWarnings(True)
        _log_uncaught_errors(logger)
    return logger


def _log_uncaught_errors(logger: logging.Logger) -> None:
    """Put the error that ends a job into its log too, not only on the console.

    paraprobe's own errors (bad audio, a corpus or config that cannot work, a checkpoint that
    cannot be loaded) say what is wrong with the input in their message: they get that one
    line, without a traceback through the code that found them. Anything else is a bug or an
    environment problem and keeps its traceback.
    """
    default_hook = sys.excepthook

    def hook(kind, error, traceback):
        logger.error("%s: %s", kind.__name__, error)
        if not kind.__module__.startswith("paraprobe."):
            default_hook(kind, error, traceback)

    sys.excepthook = hook
