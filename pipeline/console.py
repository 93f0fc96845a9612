"""What ``pipeline.run`` prints while it works: quiet library start-up, one line per step.

Three parts, all opt-in (importing this module changes nothing; it imports no TensorFlow):

* :func:`silence` hides the start-up noise of the TF stack, which would otherwise come before
  anything of ours, and must run **before TensorFlow is imported**. What hides what (measured
  with TF 2.16 / TFDV 1.16 on a machine without a GPU):

  - ``Unable to register cuDNN/cuFFT/cuBLAS factory`` (TF's C++ at import time, level E, printed
    before Python's logging exists): ``TF_CPP_MIN_LOG_LEVEL=3``; level 2, this project's
    default, still shows them. It is set in ``os.environ``, so the processes the run starts
    (``pipeline.predict``, Beam workers) inherit it.
  - ``Unable to import IPython ... TFDV visualization APIs will not function`` (TFDV's
    ``display_util`` writes it straight to ``sys.stderr`` at import: no warning, no log record,
    so no filter catches it): an import hook runs that one module's import with those two lines
    dropped from ``sys.stderr`` and everything else passed through.
  - ``Tensorflow Transform is running in tf.compat.v1 mode`` (TFT's absl warning whenever a
    Beam job applies a transform graph; the graph mode is chosen, ``pipeline.transform``): a
    filter on the ``absl`` logger drops that one message.
  - ``FutureWarning``\\ s from the Google client libraries (``PYTHONWARNINGS`` unset): a warnings
    filter here and ``PYTHONWARNINGS`` for child processes.

  ``--verbose`` skips all of it.
* :class:`Progress` writes one line per event to stderr with the time since the run began:
  stage started (and what it works on), stage done with its time and outcome, training every
  epoch (a Keras callback, :func:`training_callbacks`), Beam stages as the runner starts them
  (a log hook on the portable runner's bundle logger, throttled). Stages report through
  :func:`report`, which does nothing unless a run installed a reporter with :func:`start`.
* :func:`json_summary`: the manifest's essentials for ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from pipeline.manifest import report_paths

QUIET_TF_CPP_MIN_LOG_LEVEL = "3"
# TFDV's notice when IPython is missing: (module that prints it, the lines it prints).
TFDV_NOTICE_MODULE = "tensorflow_data_validation.utils.display_util"
TFDV_NOTICE_LINES = ("Unable to import IPython", "TFDV visualization APIs will not function")
TFT_COMPAT_V1_NOTICE = "Tensorflow Transform is running in tf.compat.v1 mode"
# The FnApiRunner (the DirectRunner's batch engine) logs each bundle it runs here, at DEBUG.
BEAM_BUNDLE_LOGGER = "apache_beam.runners.portability.fn_api_runner.fn_runner.run_bundle"
BEAM_PROGRESS_EVERY_SECONDS = 5.0

_active: Progress | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` and ``--json`` for a command line that uses this console."""
    group = parser.add_argument_group("console")
    group.add_argument(
        "--verbose",
        action="store_true",
        help="show the TensorFlow/TFDV start-up messages and library warnings",
    )
    group.add_argument(
        "--json", action="store_true", help="print the run summary as JSON on stdout"
    )


# ---- silence ---------------------------------------------------------------------------------


def silence(verbose: bool = False) -> None:
    """Hide the TF stack's start-up noise (see the module docstring); call before TF loads."""
    if verbose:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = QUIET_TF_CPP_MIN_LOG_LEVEL
    warnings.filterwarnings("ignore", category=FutureWarning)
    children = os.environ.get("PYTHONWARNINGS", "")
    if "ignore::FutureWarning" not in children:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [children, "ignore::FutureWarning"]))
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport(TFDV_NOTICE_MODULE, TFDV_NOTICE_LINES))
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _DropMessage) for f in absl.filters):
        absl.addFilter(_DropMessage(TFT_COMPAT_V1_NOTICE))


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Imports one module with chosen stderr lines dropped (others pass through)."""

    def __init__(self, module: str, drop: Sequence[str]):
        self.module = module
        self.drop = tuple(drop)

    def find_spec(self, name, path, target=None):
        if name != self.module:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self.drop)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, drop: tuple[str, ...]):
        self._loader = loader
        self._drop = drop

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):
                self._loader.exec_module(module)
        finally:
            kept = [
                line
                for line in captured.getvalue().splitlines(keepends=True)
                if not line.startswith(self._drop)
            ]
            sys.stderr.write("".join(kept))

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self._loader, name)


# ---- progress --------------------------------------------------------------------------------


class Progress:
    """Timestamped progress lines: ``[  12.3s] validation: done in 5.7 s ...``."""

    def __init__(self, stream: TextIO | None = None, clock=time.monotonic):
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self.stage: str | None = None

    def line(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(f"[{self._clock() - self._started:7.1f}s] {text}\n")
        stream.flush()


def start(verbose: bool = False, stream: TextIO | None = None) -> Progress:
    """Silence the start-up noise and install a progress reporter (and the Beam hook)."""
    global _active
    silence(verbose)
    _active = Progress(stream)
    _install_beam_hook()
    if verbose:
        for name in ("apache_beam", "absl", "tensorflow", "tensorflow_transform", "root"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return _active


def stop() -> None:
    """Remove the reporter (the Beam hook then reports nothing)."""
    global _active
    _active = None


def report(text: str) -> None:
    """A progress line from the current stage (nothing unless :func:`start` ran)."""
    if _active is not None:
        prefix = f"{_active.stage}: " if _active.stage else ""
        _active.line(prefix + text)


@contextlib.contextmanager
def stage(name: str, ctx: Any) -> Iterator[None]:
    """Lines for a stage's start (what it works on) and end (time and outcome)."""
    if _active is None:
        yield
        return
    _active.stage = None
    _active.line(f"{name}: started{_describe(name, ctx)}")
    _active.stage = name
    _beam.reset()
    started = time.monotonic()
    try:
        yield
    except BaseException as error:
        _active.stage = None
        _active.line(
            f"{name}: failed after {time.monotonic() - started:.1f} s ({type(error).__name__})"
        )
        raise
    _active.stage = None
    record = ctx.manifest.get("stages", {}).get(name, {})
    outcome = _outcome(name, record, ctx.manifest)
    if _beam.seen:
        outcome += f" ({len(_beam.seen)} Beam stages)"
    _active.line(f"{name}: done in {time.monotonic() - started:.1f} s{outcome}")


def _rows(manifest: dict) -> str:
    rows = manifest.get("rows_per_split") or {}
    return ", ".join(f"{split}={count:,}" for split, count in rows.items())


def _describe(name: str, ctx: Any) -> str:
    """What a stage is about to work on, from the run's arguments and earlier stages."""
    manifest = ctx.manifest
    rows = _rows(manifest)
    interval = " ".join(filter(None, [getattr(ctx, "start", None), getattr(ctx, "end", None)]))
    started = getattr(ctx, "started", {})
    descriptions = {
        "data": f"warehouse engine {getattr(ctx, 'warehouse_engine', '?')}",
        "warehouse": f"split of {interval}" if interval else "split of the whole table",
        "validation": f"TFDV statistics of rows {rows}" if rows else "",
        "transform": (f"TFT analyze train, transform rows {rows}" if rows else "")
        + (", in a process started after warehouse" if "transform" in started else ""),
        "train": f"{getattr(ctx, 'train_steps', '?')} steps, then evaluation",
        "parity": f"{getattr(ctx, 'parity_rows', '?')} eval rows",
        "baselines": "models to compare with"
        + (", in a process started after transform" if "baselines" in started else ""),
        "evaluate": "eval rows through serving_default, against the served version, per slice",
        "predict": f"{getattr(ctx, 'predict_rows', '?')} eval rows in a fresh process"
        + (", started after export" if "predict" in started else ""),
    }
    text = descriptions.get(name, "")
    return f" ({text})" if text else ""


def _outcome(name: str, record: dict, manifest: dict) -> str:
    """A stage's result in a few words, from its manifest record."""
    if name == "warehouse" and (rows := _rows(manifest)):
        return f": rows {rows}"
    if name == "validation" and "reports" in record:
        reports = record["reports"].values()
        blocking = sum(r.get("blocking", 0) for r in reports)
        warned = sum(r.get("warnings", 0) for r in reports)
        return f": {blocking} blocking anomalies, {warned} warnings"
    if name == "train" and "steps" in record:
        evaluated = manifest.get("metrics", {}).get("eval", {})
        # The label kind's first metric: AUC (binary), accuracy (multi-class), RMSE (regression).
        first = next(((k, v) for k, v in evaluated.items() if k != "examples"), None)
        shown = f", eval {first[0]} {first[1]:.4f}" if first else ""
        return f": {record['steps']} steps{shown}"
    if name == "baselines" and "metrics" in record:
        steps = {
            "wide_only": record.get("wide_steps"),
            "no_derived": record.get("no_derived_steps"),
        }
        trained = ", ".join(f"{model} {n} steps" for model, n in steps.items() if n is not None)
        return f": {trained or 'none'}"
    if name == "parity" and "passed" in record:
        return f": {'passed' if record['passed'] else 'FAILED'} on {record.get('rows')} rows"
    if name == "evaluate" and "blessing" in record:
        return ": blessed" if record["blessing"]["blessed"] else ": not blessed"
    if name == "predict" and "process_seconds" in record:
        return f": the process took {record['process_seconds']:.1f} s"
    if name == "push" and "blessed" in record:
        return f": pushed as version {record.get('version')}" if record["blessed"] else ": kept"
    return ""


# ---- training --------------------------------------------------------------------------------


def training_callbacks(total_steps: int | None = None) -> list:
    """A Keras callback reporting each epoch's step count, loss and eval AUC ([] if no run
    reporter is installed, so library use and tests stay silent)."""
    if _active is None:
        return []
    import tf_keras

    class TrainingProgress(tf_keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self._epochs = self.params.get("epochs") or 1
            self._steps = self.params.get("steps") or 0
            self._total = total_steps or self._epochs * self._steps
            self._done = 0
            report(f"{self.model.name} fitting {self._total} steps (a line every {self._steps})")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self._done = min((epoch + 1) * self._steps, self._total)
            metrics = "".join(
                f", {key} {value:.4f}"
                for key, value in logs.items()
                if key == "loss" or key.startswith("val_")
            )
            report(f"{self.model.name} step {self._done}/{self._total}{metrics}")

        def on_train_end(self, logs=None):
            report(f"{self.model.name} done")

    return [TrainingProgress()]


# ---- Beam ------------------------------------------------------------------------------------


class _BeamProgress(logging.Handler):
    """Counts the fused stages the FnApiRunner starts in the current pipeline stage; reports
    the newest one now and then."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: set[str] = set()
        self._last_report = 0.0

    def reset(self) -> None:
        self.seen = set()
        self._last_report = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        if _active is None or not isinstance(record.args, tuple) or not record.args:
            return
        name = str(record.args[0])  # the message's first argument; never format the rest
        if name in self.seen:
            return
        self.seen.add(name)
        now = time.monotonic()
        internal = name.startswith("ref_PCollection")  # the runner's own split/flatten steps
        if not internal and now - self._last_report >= BEAM_PROGRESS_EVERY_SECONDS:
            self._last_report = now
            report(f"Beam stage {len(self.seen)} running ({_readable(name)})")


_beam = _BeamProgress()


def _readable(stage_name: str, limit: int = 60) -> str:
    """``((ref_AppliedPTransform_GenerateStatistics-...-Impulse_6)+(...))`` -> its first step."""
    text = stage_name.split("+", 1)[0].strip("()").replace("ref_AppliedPTransform_", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _install_beam_hook() -> None:
    logger = logging.getLogger(BEAM_BUNDLE_LOGGER)
    if _beam not in logger.handlers:
        logger.addHandler(_beam)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # its DEBUG records must not reach the root handler


# ---- summary ---------------------------------------------------------------------------------


def json_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's essentials, for machines (``--json``): what the text summary says."""
    stages = manifest.get("stages", {})
    anomalies = manifest.get("anomalies", [])
    parity = stages.get("parity", {})
    push = stages.get("push", {})
    summary: dict[str, Any] = {
        "run_id": manifest.get("run_id"),
        "status": manifest.get("status"),
        "run_dir": manifest.get("run_dir"),
        "stages": {
            name: {"status": s.get("status"), "seconds": s.get("seconds")}
            for name, s in stages.items()
        },
        "rows_per_split": manifest.get("rows_per_split", {}),
        "anomalies": {
            "blocking": sum(1 for a in anomalies if a.get("severity") == "BLOCKING"),
            "warnings": sum(1 for a in anomalies if a.get("severity") != "BLOCKING"),
            "found": anomalies,
        },
        "metrics": manifest.get("metrics", {}),
    }
    if "passed" in parity:
        summary["parity"] = {k: parity.get(k) for k in ("passed", "rows", "max_relative_deviation")}
    if "predictions" in manifest:
        summary["predictions"] = manifest["predictions"]
    evaluated = stages.get("evaluate", {})
    if "blessing" in evaluated:
        blessing = evaluated["blessing"]
        slices = blessing.get("slices") or {}
        summary["evaluation"] = {
            "rows": evaluated.get("rows"),
            "models": evaluated.get("models", {}),
            "blessed": blessing["blessed"],
            "reason": blessing["reason"],
            "slices": {k: slices.get(k) for k in ("enabled", "passed", "reason", "worse")},
        }
    if "blessed" in push:
        summary["push"] = {k: push.get(k) for k in ("blessed", "version", "reason")}
    summary["reports"] = report_paths(manifest)
    if manifest.get("error"):
        summary["error"] = manifest["error"]
    return summary
