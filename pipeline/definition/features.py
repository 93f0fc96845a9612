"""Model features: a name, the raw columns it reads, its transform kind and its model part."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from pipeline.definition.columns import ColumnType
from transforms.kinds import Kind


class ModelPart(enum.StrEnum):
    """Which part of the wide-and-deep model a feature feeds."""

    WIDE = "wide"  # one-hot into the linear part
    DEEP = "deep"  # dense value or embedding into the neural net
    BOTH = "both"


@dataclasses.dataclass(frozen=True)
class Feature:
    """A model feature derived from one or more raw columns.

    ``default`` fills a missing raw value before the transform (instance-level imputation): one
    value for every input, a tuple with one per input (a cross of a STRING and an INT64 column
    needs ``("", 0)``), or None for each input type's own default (``""``, ``0``, ``0.0``).
    """

    name: str
    inputs: tuple[str, ...]
    kind: Kind
    model_part: ModelPart = ModelPart.BOTH
    default: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            object.__setattr__(self, "inputs", (self.inputs,))

    @property
    def output_name(self) -> str:
        """Name of the transformed feature in TFRecords and model inputs."""
        return f"{self.name}_xf"

    @property
    def is_categorical(self) -> bool:
        return self.kind.categorical

    @property
    def analysis_passes(self) -> int:
        return self.kind.analysis_passes

    @property
    def num_categories(self) -> int | None:
        return self.kind.num_categories

    def input_defaults(self, types: Mapping[str, ColumnType]) -> tuple[Any, ...]:
        """The default of each input, checked against its column type."""
        if isinstance(self.default, tuple | list):
            if len(self.default) != len(self.inputs):
                raise ValueError(
                    f"{len(self.default)} defaults for {len(self.inputs)} inputs {self.inputs}"
                )
            defaults = tuple(self.default)
        else:
            defaults = (self.default,) * len(self.inputs)
        resolved = []
        for column, default in zip(self.inputs, defaults, strict=True):
            column_type = types[column]
            if default is None:
                resolved.append(column_type.facts.python_default)
                continue
            numeric = isinstance(default, int | float) and not isinstance(default, bool)
            if column_type.is_numeric != numeric:
                raise ValueError(
                    f"default {default!r} does not fit input {column!r} ({column_type}); "
                    "give one default per input, e.g. default=('', 0)"
                )
            resolved.append(default)
        return tuple(resolved)

    def problems(self, types: Mapping[str, ColumnType]) -> list[str]:
        """What is wrong with this feature over columns of ``types`` (empty when nothing is)."""
        kind, count = self.kind, len(self.inputs)
        if not isinstance(kind, Kind):
            return [f"kind must be a transforms.kinds.Kind, got {kind!r}"]
        high = kind.max_inputs
        if count < kind.min_inputs or (high is not None and count > high):
            if kind.min_inputs == high:
                wanted = str(high)
            elif high is None:
                wanted = f"at least {kind.min_inputs}"
            else:
                wanted = f"{kind.min_inputs}-{high}"
            return [f"{kind.name} takes {wanted} input(s), got {count}"]
        found = []
        if kind.input_types is not None:
            for column in self.inputs:
                if types[column].value not in kind.input_types:
                    allowed = "/".join(sorted(kind.input_types))
                    found.append(
                        f"{kind.name} needs {allowed} inputs; {column!r} is {types[column]}"
                    )
        found += kind.problems() + kind.input_problems(count)
        try:
            self.input_defaults(types)
        except ValueError as error:
            found.append(str(error))
        return found
