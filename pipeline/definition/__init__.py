"""The language dataset definitions are written in (pure Python; no TensorFlow at import).

A dataset folder's ``definition.py`` imports from here::

    from pipeline.definition import Column, ColumnType, DatasetDefinition, Feature, ...
    from transforms import kinds

Modules: ``columns`` (column types and what each means along the pipeline), ``labels`` (binary,
multi-class, regression), ``features`` (features and model parts; the transform kinds live in
``transforms.kinds``), ``splitting`` (row filters, split settings), ``sources`` (where raw files
come from), ``windows`` (window aggregations and point-in-time joins: derived columns),
``slices`` (groups of eval rows judged separately), ``dataset_definition`` (the definition and
its consistency checks).
"""

from pipeline.definition.columns import MISSING_INT64, TYPE_FACTS, Column, ColumnType, TypeFacts
from pipeline.definition.dataset_definition import DatasetDefinition, DefinitionError, SideTable
from pipeline.definition.features import Feature, ModelPart
from pipeline.definition.labels import (
    BinaryLabel,
    Head,
    Label,
    LabelKind,
    MultiClassLabel,
    RegressionLabel,
)
from pipeline.definition.slices import MISSING_KEY, Slice
from pipeline.definition.sources import (
    CsvFormat,
    LocalFiles,
    ParquetFormat,
    PypiArchive,
    Source,
    SourceFile,
    TimestampFormat,
)
from pipeline.definition.splitting import (
    SPLIT_NAMES,
    AtLeast,
    AtMost,
    DuplicatePolicy,
    RequirePresent,
    RowFilter,
    SplitSettings,
)
from pipeline.definition.windows import (
    Aggregation,
    AsOfJoin,
    Join,
    Lookup,
    WindowFeature,
    duration_label,
    duration_seconds,
)

__all__ = [
    "MISSING_INT64",
    "MISSING_KEY",
    "SPLIT_NAMES",
    "TYPE_FACTS",
    "Aggregation",
    "AsOfJoin",
    "AtLeast",
    "AtMost",
    "BinaryLabel",
    "Column",
    "ColumnType",
    "CsvFormat",
    "DatasetDefinition",
    "DefinitionError",
    "DuplicatePolicy",
    "Feature",
    "Head",
    "Join",
    "Label",
    "LabelKind",
    "LocalFiles",
    "Lookup",
    "ModelPart",
    "MultiClassLabel",
    "ParquetFormat",
    "PypiArchive",
    "RegressionLabel",
    "RequirePresent",
    "RowFilter",
    "SideTable",
    "Slice",
    "Source",
    "SourceFile",
    "SplitSettings",
    "TimestampFormat",
    "TypeFacts",
    "WindowFeature",
    "duration_label",
    "duration_seconds",
]
