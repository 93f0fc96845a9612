"""``python -m pipeline.validation``: statistics, checks, schema review (see :mod:`.cli`)."""

import sys

from pipeline import console

console.silence(verbose="--verbose" in sys.argv)  # before TensorFlow and TFDV load

from pipeline.validation.cli import main  # noqa: E402

sys.exit(main())
