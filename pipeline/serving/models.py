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
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from pipeline.serving.errors import BadRequest, NotFound
from pipeline.serving.layout import SAVED_MODEL_FILE, complete_versions, read_blessing, version_dir

log = logging.getLogger("pipeline.serve")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """One loaded version: its signatures (serialized examples in) and their JSON description."""

    version: int
    path: Path
    saved_model: Any  # keeps the loaded object (and its resources) alive
    signatures: Mapping[str, Callable[..., dict[str, tf.Tensor]]]
    input_names: Mapping[str, str]  # signature -> its one string input
    signature_defs: Mapping[str, dict]
    blessing: dict | None
    # Every SignatureDef of the export as TF Serving reads it (``__saved_model_init_op`` too):
    # the gRPC API checks method names and named inputs against these and returns them whole.
    signature_protos: Mapping[str, meta_graph_pb2.SignatureDef] = dataclasses.field(
        default_factory=dict
    )

    def input_name(self, signature_name: str) -> str:
        if signature_name not in self.signatures:
            known = ", ".join(sorted(self.signatures))
            raise BadRequest(f"signature_name: unknown signature {signature_name!r}; has {known}")
        return self.input_names[signature_name]

    def run(self, signature_name: str, examples: list[bytes]) -> dict[str, np.ndarray]:
        """Outputs of ``signature_name`` on serialized examples; a 400 for unparsable ones."""
        function = self.signatures[signature_name]
        tensor = tf.constant(examples, dtype=tf.string, shape=[len(examples)])
        try:
            outputs = function(**{self.input_name(signature_name): tensor})
        except tf.errors.InvalidArgumentError as error:
            raise BadRequest(f"examples: {_short_tf_message(error)}") from None
        return {name: value.numpy() for name, value in outputs.items()}


def _short_tf_message(error: tf.errors.OpError) -> str:
    """The line of a TF error that says what was wrong (e.g. ``Key: fare. Data types ...``)."""
    noise = ("Graph execution", "Detected at", "<stack traces", "[[")
    lines = [line.strip() for line in str(error.message).splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    return (useful or ["the examples could not be parsed"])[0][:300]


def signature_protos(export_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Every SignatureDef of the SavedModel's (first, serving) meta graph, by name."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(export_dir) / SAVED_MODEL_FILE).read_bytes())
    return dict(proto.meta_graphs[0].signature_def)


def signature_defs(export_dir: Path) -> dict[str, dict]:
    """The SavedModel's signature_defs as TF Serving's metadata JSON shows them."""
    defs = signature_protos(export_dir)
    return {
        name: json_format.MessageToDict(definition, preserving_proto_field_name=True)
        for name, definition in sorted(defs.items())
        if not name.startswith("__")
    }


def load_version(export_dir: Path, version: int) -> LoadedModel:
    """Load a SavedModel and call each signature once, so the first request pays no setup."""
    loaded = tf.saved_model.load(str(export_dir))
    signatures, input_names = {}, {}
    for name, function in loaded.signatures.items():
        inputs = function.structured_input_signature[1]
        strings = [key for key, spec in inputs.items() if spec.dtype == tf.string]
        if len(inputs) == 1 and strings:  # the only kind a JSON or b64 request can feed
            signatures[name], input_names[name] = function, strings[0]
    if not signatures:
        raise ValueError(f"{export_dir}: no signature takes serialized examples")
    model = LoadedModel(
        version=version,
        path=Path(export_dir),
        saved_model=loaded,
        signatures=signatures,
        input_names=input_names,
        signature_defs={k: v for k, v in signature_defs(export_dir).items() if k in signatures},
        blessing=read_blessing(export_dir),
        signature_protos=signature_protos(export_dir),
    )
    for name in signatures:
        model.run(name, [b""])
    for name, function in loaded.signatures.items():
        if name not in signatures:
            _warm_up_on_empty_batch(name, function)
    return model


def _warm_up_on_empty_batch(name: str, function: Callable) -> None:
    """Call a named-tensor signature (e.g. ``serving_raw``) once on zero rows, for the same
    reason; a signature that cannot take an empty batch is simply left cold."""
    specs = function.structured_input_signature[1]
    if not all(
        s.shape.rank and s.shape[0] is None and s.shape[1:].is_fully_defined()
        for s in specs.values()
    ):
        return
    try:
        function(**{key: tf.zeros([0, *s.shape[1:]], s.dtype) for key, s in specs.items()})
    except (tf.errors.OpError, TypeError, ValueError):
        log.info("signature %s does not take an empty batch; not warmed up", name)


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
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
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


def _stamp(directory: Path) -> tuple[int, int, int]:
    """Files, bytes and newest mtime under a version: changes while a non-atomic copy goes on."""
    files = size = newest = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            info = path.stat()
            files, size, newest = files + 1, size + info.st_size, max(newest, info.st_mtime_ns)
    return files, size, newest
