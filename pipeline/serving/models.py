"""Loaded model versions and the background poller that swaps in newly pushed ones.

The registry keeps an immutable ``{version: LoadedModel}`` mapping and replaces it whole, so a
request takes one snapshot and never sees a half-updated state; a version is loaded and warmed up
before it becomes visible, and an evicted one stays alive while requests still hold it. The
policy follows TF Serving's "latest" policy, keeping one older version loaded for
``/versions/N`` (rollback checks, canaries): the newest loadable version on disk serves requests
without a version, and at most ``keep`` versions stay loaded. A version that fails to load is
remembered and not retried until its files change (a copy still in progress, a re-push).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from pipeline.serving.errors import BadRequest, NotFound
from pipeline.serving.layout import SAVED_MODEL_FILE, complete_versions, read_blessing, version_dir
from pipeline.serving.signatures import SignatureDescription, describe

log = logging.getLogger("pipeline.serving")


# TensorFlow's function executors. The default one hands each of a signature's several hundred
# small ops to its inter-op thread pool, whose threads go to sleep between requests: measured
# here, the same one-row call took 0.73-0.98 ms with 0.3-1 ms pauses between calls against 0.60
# back to back. The single-threaded executor runs the ops on the calling thread (kernels still
# use the intra-op pool): 0.53-0.74 ms with pauses, the same outputs bit for bit, and no slower
# on 1,000 rows (bench/serving_latency.py shows the effect over HTTP).
SINGLE_THREADED_EXECUTOR = "SINGLE_THREADED_EXECUTOR"
DEFAULT_EXECUTOR = ""


class Signature:
    """One callable signature: its description and a fast way to call it.

    Calling a loaded signature with keyword arguments binds and validates them against its
    input signature, and the loaded-function wrapper resolves the handle of every captured
    variable (63 in the default export), on every call: together about 0.15 ms, a quarter of what
    the model itself takes for one row. The server builds inputs of exactly the declared dtype
    and rank, so it calls TensorFlow's ``ConcreteFunction._call_flat`` on the flat inputs with
    the handles resolved once. Distributed variables (whose handle depends on the replica
    context) or another TensorFlow version's classes get TensorFlow's keyword call instead; a
    test checks that both give the same outputs.
    """

    def __init__(self, description: SignatureDescription, function: Any) -> None:
        self.description = description
        self.function = function
        kwargs = function.structured_input_signature[1]
        self.input_order = tuple(sorted(kwargs))  # tf.nest flattens a dict in key order
        self._dtypes = {name: spec.dtype for name, spec in kwargs.items()}
        self._flat = _flat_call(function, len(kwargs))
        self.executor = SINGLE_THREADED_EXECUTOR  # see run(); warm_up() may fall back

    @property
    def name(self) -> str:
        return self.description.name

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Outputs on ``feeds`` (input name -> values); a 400 if the model refuses them."""
        tensors = [tf.constant(feeds[name], dtype=self._dtypes[name]) for name in self.input_order]
        try:
            with tf.experimental.function_executor_type(self.executor):
                if self._flat is not None:
                    outputs = self._flat(tensors)
                else:
                    outputs = self.function(**dict(zip(self.input_order, tensors, strict=True)))
        except tf.errors.InvalidArgumentError as error:
            raise BadRequest(f"examples: {_short_tf_message(error)}") from None
        except UnicodeDecodeError:  # see unparsable_input
            raise BadRequest(unparsable_input(feeds, "")) from None
        return {name: value.numpy() for name, value in outputs.items()}

    def warm_up(self) -> None:
        """Run once on one row, so the first request pays no setup."""
        blanks = {"DT_STRING": [b""], "DT_FLOAT": [0.0], "DT_INT64": [0]}
        feeds = {}
        for name, tensor in self.description.inputs.items():
            if tensor.shape != (-1,) or tensor.dtype not in blanks:
                return  # not a signature requests can feed (see raw_tensors)
            feeds[name] = blanks[tensor.dtype]
        try:
            self.run(feeds)
        except Exception:  # an op the single-threaded executor cannot run: TF's default one
            log.warning(
                "signature %s: single-threaded executor failed, using the default",
                self.name,
                exc_info=True,
            )
            self.executor = DEFAULT_EXECUTOR
            self.run(feeds)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """One loaded version: every signature, callable ones with a :class:`Signature`."""

    version: int
    path: Path
    saved_model: Any  # keeps the loaded object (and its resources) alive
    descriptions: Mapping[str, SignatureDescription]  # every SignatureDef, init op included
    signatures: Mapping[str, Signature]
    signature_defs: Mapping[str, dict]  # TF Serving's metadata JSON of every SignatureDef
    blessing: dict | None
    # Every SignatureDef of the export as TF Serving reads it (``__saved_model_init_op`` too):
    # the gRPC API checks method names and named inputs against these and returns them whole.
    signature_protos: Mapping[str, meta_graph_pb2.SignatureDef] = dataclasses.field(
        default_factory=dict
    )


def _flat_call(function: Any, inputs: int) -> Callable[[list], dict] | None:
    """``tensors -> outputs`` through ``ConcreteFunction._call_flat``, or None if unsafe."""
    from tensorflow.python.distribute import distribute_utils
    from tensorflow.python.eager.polymorphic_function.concrete_function import ConcreteFunction

    flat_call = getattr(ConcreteFunction, "_call_flat", None)
    if not isinstance(function, ConcreteFunction) or flat_call is None:
        return None
    captured = list(function.captured_inputs)
    if any(distribute_utils.is_distributed_variable(c) for c in captured):
        return None
    if len(tf.nest.flatten(function.structured_input_signature)) != inputs:
        return None
    return lambda tensors: flat_call(function, tensors, captured)


def _short_tf_message(error: tf.errors.OpError) -> str:
    """The line of a TF error that says what was wrong (e.g. ``Key: fare. Data types ...``)."""
    noise = ("Graph execution", "Detected at", "<stack traces", "[[")
    lines = [line.strip() for line in str(error.message).splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    return (useful or ["the examples could not be parsed"])[0][:300]


def unparsable_input(inputs: Mapping[str, Any], where: str) -> str:
    """Which string of the request is no serialized ``tf.Example``.

    For the refusal of a TensorFlow op whose error message quotes such bytes: they are no UTF-8
    and TensorFlow's own message raises ``UnicodeDecodeError`` instead of the op's error.
    """
    for name, values in inputs.items():
        flat = np.ravel(values).tolist() if isinstance(values, np.ndarray) else list(values)
        for index, value in enumerate(flat):
            if not isinstance(value, bytes):
                continue
            try:
                example_pb2.Example.FromString(value)
            except Exception:
                field = where if where.endswith(f".{name}") else f"{where}.{name}".lstrip(".")
                return (
                    f"{field}[{index}]: could not parse example input: not a serialized tf.Example"
                )
    return (
        f"{where or 'examples'}: the model could not read the input (TensorFlow quoted bytes "
        "that are no UTF-8)"
    )


def read_signature_defs(export_dir: Path) -> Mapping[str, meta_graph_pb2.SignatureDef]:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(export_dir) / SAVED_MODEL_FILE).read_bytes())
    return dict(sorted(proto.meta_graphs[0].signature_def.items()))


def signature_defs(export_dir: Path) -> dict[str, dict]:
    """Every SignatureDef as TF Serving's metadata JSON shows it (default fields printed)."""
    return {
        name: json_format.MessageToDict(
            definition, including_default_value_fields=True, preserving_proto_field_name=True
        )
        for name, definition in read_signature_defs(export_dir).items()
    }


def load_version(export_dir: Path, version: int) -> LoadedModel:
    """Load a SavedModel and call each signature once, so the first request pays no setup."""
    loaded = tf.saved_model.load(str(export_dir))
    definitions = read_signature_defs(export_dir)
    descriptions = {name: describe(name, d) for name, d in definitions.items()}
    signatures = {
        name: Signature(descriptions[name], function)
        for name, function in sorted(loaded.signatures.items())
        if name in descriptions
    }
    if not signatures:
        raise ValueError(f"{export_dir}: no signature to serve")
    model = LoadedModel(
        version=version,
        path=Path(export_dir),
        saved_model=loaded,
        descriptions=descriptions,
        signatures=signatures,
        signature_defs=signature_defs(export_dir),
        blessing=read_blessing(export_dir),
        signature_protos=definitions,
    )
    for signature in signatures.values():
        signature.warm_up()
    return model


@dataclasses.dataclass(frozen=True)
class _Failure:
    stamp: tuple[int, int, int]  # the directory when it failed; retried once it changes
    error: str


class ModelRegistry:
    """The versions of one model that are loaded now, refreshed from the model base."""

    def __init__(
        self,
        model_base: Path,
        keep: int = 2,
        loader: Callable[[Path, int], LoadedModel] = load_version,
        freeze_gc: bool = False,
    ) -> None:
        """With ``freeze_gc`` the loaded versions are kept out of the garbage collector's scans
        (see :func:`freeze_loaded_objects`); a server process wants that, a test process not."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._freeze_gc = freeze_gc
        self.model_base = Path(model_base)
        self._keep = keep
        self._loader = loader
        self._loaded: Mapping[int, LoadedModel] = {}
        self._failed: Mapping[int, _Failure] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- reading (request threads) ---------------------------------------------------------

    def get(self, version: int | None = None) -> LoadedModel:
        """The newest loaded version, or ``version``; 404 if it is not loaded."""
        loaded = self._loaded
        if not loaded:
            raise NotFound(f"no version of the model is loaded yet from {self.model_base}")
        if version is None:
            return loaded[max(loaded)]
        if version not in loaded:
            versions = ", ".join(str(v) for v in sorted(loaded, reverse=True))
            raise NotFound(f"version {version} is not loaded; loaded versions: {versions}")
        return loaded[version]

    def statuses(self) -> list[dict]:
        """TF Serving's ``model_version_status`` entries, newest first."""
        loaded, failed = self._loaded, self._failed
        entries = [(v, "AVAILABLE", "OK", "") for v in loaded]
        entries += [(v, "END", "UNKNOWN", f.error) for v, f in failed.items() if v not in loaded]
        return [
            {
                "version": str(version),
                "state": state,
                "status": {"error_code": code, "error_message": message},
            }
            for version, state, code, message in sorted(entries, reverse=True)
        ]

    # ---- refreshing (poller thread) --------------------------------------------------------

    def refresh(self) -> bool:
        """Load the newest complete version if it is new; returns whether anything changed."""
        with self._refresh_lock:
            on_disk = complete_versions(self.model_base)
            loaded = {v: m for v, m in self._loaded.items() if v in on_disk}
            failed = {v: f for v, f in self._failed.items() if v in on_disk}
            for version in reversed(on_disk):
                if version in loaded:
                    break
                stamp = _stamp(version_dir(self.model_base, version))
                if version in failed and failed[version].stamp == stamp:
                    continue
                model = self._try_load(version, stamp, failed)
                if model is not None:
                    loaded[version] = model
                    failed.pop(version, None)
                    break
            kept = {v: loaded[v] for v in sorted(loaded, reverse=True)[: self._keep]}
            changed = kept.keys() != self._loaded.keys() or failed.keys() != self._failed.keys()
            self._loaded, self._failed = kept, failed
            if changed:
                log.info("serving versions %s (newest answers unversioned requests)", sorted(kept))
                if self._freeze_gc:
                    freeze_loaded_objects()
            return changed

    def _try_load(self, version: int, stamp: tuple, failed: dict) -> LoadedModel | None:
        directory = version_dir(self.model_base, version)
        started = time.perf_counter()
        try:
            model = self._loader(directory, version)
        except Exception as error:  # a bad export must not stop the server
            log.exception("version %d at %s failed to load", version, directory)
            failed[version] = _Failure(stamp, f"{type(error).__name__}: {error}"[:1000])
            return None
        log.info("loaded version %d in %.1f s", version, time.perf_counter() - started)
        return model

    def start(self, poll_seconds: float) -> None:
        """Refresh every ``poll_seconds`` in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, args=(poll_seconds,), name="model-poller", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _poll(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            try:
                self.refresh()
            except Exception:  # e.g. the model base vanished for a moment
                log.exception("refreshing %s failed", self.model_base)


def freeze_loaded_objects() -> None:
    """Move every object alive now out of the garbage collector's scans.

    The default export, loaded, is 400,000 Python objects; one full collection over them took
    0.22 s here: a pause in whichever request triggers it. Frozen objects are skipped. Unfreezing
    first lets the collection reclaim an evicted version's reference cycles.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _stamp(directory: Path) -> tuple[int, int, int]:
    """Files, bytes and newest mtime under a version: changes while a non-atomic copy goes on."""
    files = size = newest = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            info = path.stat()
            files, size, newest = files + 1, size + info.st_size, max(newest, info.st_mtime_ns)
    return files, size, newest
