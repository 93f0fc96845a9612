"""Serve versioned exports over TF Serving's REST and gRPC APIs: ``python -m pipeline.serving``.

Modules: ``layout`` (the model base on disk) and ``errors`` are pure Python, so
:mod:`pipeline.push` stays cheap to import; ``examples`` (JSON <-> tf.Example), ``protocol`` (TF
Serving's request and response JSON), ``models`` (loading, hot swap), ``request_log``,
``signatures`` (what each signature takes, TF Serving's API rules), ``raw_tensors`` (JSON ->
named tensors), ``service`` (the handlers without HTTP), ``app`` (the ASGI routes) and
``connections`` (connection limits) import TensorFlow or uvicorn.

TensorFlow Serving's gRPC API: ``grpc_endpoint`` (the grpcio server, its limits and flags),
``grpc_service`` (the PredictionService and ModelService servicers), ``signature_rules`` (which
signature each method may use), ``tensor_protos`` (TensorProto <-> NumPy, checked),
``raw_tensor_log`` (raw-tensor requests as examples for the request log) and ``rpc_status``.
"""
