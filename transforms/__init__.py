"""Pure TensorFlow preprocessing: no Beam, no I/O.

Everything here runs inside TFT's analyze/transform graph and, through the exported transform
graph, inside the serving model, so training and serving share one implementation.
"""

import os

# Same reason as in pipeline/__init__.py: keep Keras 2 for TFT's transform layer.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
