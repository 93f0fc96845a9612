"""``python -m pipeline.warehouse``: see :mod:`pipeline.warehouse.cli`."""

import sys

from pipeline.warehouse.cli import main

sys.exit(main())
