"""Registry of dataset definitions by name."""

from pipeline.dataset import DatasetDefinition


def get_dataset(name: str) -> DatasetDefinition:
    """Return the definition called ``name`` (e.g. ``"taxi"``)."""
    if name == "taxi":
        from pipeline.datasets.taxi import TAXI

        return TAXI
    raise KeyError(f"unknown dataset {name!r}; known: taxi")
