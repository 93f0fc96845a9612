"""SavedModels written in one canonical byte order, so the same model is the same bytes.

TFT assembles transform_fn from the analyzers' results as Beam delivers them, so the nodes of
its graph come out in a different order from run to run: the same graph, different bytes, and
every digest downstream (the transform graph, the export that embeds it) differs. A GraphDef's
and a FunctionDef's node order carries no meaning (nodes refer to each other by name), so
sorting them by name, and the function library by signature name, yields one canonical
serialization; the fingerprint file that TensorFlow keeps beside the graph is then recomputed.
"""

from __future__ import annotations

from pipeline import storage

SAVED_MODEL_FILE = "saved_model.pb"
FINGERPRINT_FILE = "fingerprint.pb"


def canonicalize(directory: str) -> None:
    """Rewrite ``directory/saved_model.pb`` in canonical order (and its fingerprint)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    path = storage.join(directory, SAVED_MODEL_FILE)
    model = saved_model_pb2.SavedModel.FromString(storage.read_bytes(path))
    for meta_graph in model.meta_graphs:
        _sort(meta_graph.graph_def.node, lambda node: node.name)
        library = meta_graph.graph_def.library
        _sort(library.function, lambda function: function.signature.name)
        for function in library.function:
            _sort(function.node_def, lambda node: node.name)
        _sort(library.gradient, lambda gradient: gradient.function_name)
    storage.write_bytes_atomic(path, model.SerializeToString(deterministic=True))
    if storage.isfile(storage.join(directory, FINGERPRINT_FILE)):
        fingerprint = fingerprinting.CreateFingerprintDef(str(directory))
        storage.write_bytes_atomic(storage.join(directory, FINGERPRINT_FILE), fingerprint)


def _sort(repeated, key) -> None:
    items = sorted(repeated, key=key)
    copies = [type(item)() for item in items]
    for copy, item in zip(copies, items, strict=True):
        copy.CopyFrom(item)
    del repeated[:]
    repeated.extend(copies)
