"""What every command line of the pipeline shares: choosing the dataset, and usage errors.

A usage error (an unknown dataset, a flag that contradicts the definition) exits with status 2
before anything is written, so a scheduler does not retry it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from pipeline.datasets import DATASET_PATH_ENV, DEFAULT_DATASET, UnknownDataset, get_dataset
from pipeline.definition import DatasetDefinition, DefinitionError

EXIT_USAGE = 2


class UsageError(ValueError):
    """The command line asks for something that cannot be done (exit status 2)."""


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default=None,
        help=f"dataset name (default: {DEFAULT_DATASET}); dataset folders are found in "
        f"pipeline/datasets/ and on ${DATASET_PATH_ENV}",
    )


def dataset_from_args(args: argparse.Namespace) -> DatasetDefinition:
    """The definition ``--dataset`` names; unknown names raise :class:`UsageError`."""
    try:
        return get_dataset(getattr(args, "dataset", None))
    except UnknownDataset as error:
        raise UsageError(str(error)) from None


@contextlib.contextmanager
def exit_on_usage_error(status: int = EXIT_USAGE) -> Iterator[None]:
    """Turn a usage error (or a broken definition) into a message and ``SystemExit(status)``."""
    try:
        yield
    except (UsageError, UnknownDataset, DefinitionError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(status) from None
