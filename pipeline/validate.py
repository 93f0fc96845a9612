"""Entry point of the validation stage: ``python -m pipeline.validate`` and its Python API.

The implementation lives in :mod:`pipeline.validation`; this module keeps the stage's name short
for the orchestrator (``from pipeline.validate import compute_statistics, ...``) and re-exports
exactly that package's public API, so the two lists cannot drift apart.
"""

import sys

from pipeline import console

if __name__ == "__main__":  # quiet before TensorFlow and TFDV load (--verbose shows it all)
    console.silence(verbose="--verbose" in sys.argv)

from pipeline import validation
from pipeline.validation import *  # noqa: F403  (the stage's API under its short name)
from pipeline.validation.cli import main

__all__ = [*validation.__all__, "main"]

if __name__ == "__main__":
    sys.exit(main())
