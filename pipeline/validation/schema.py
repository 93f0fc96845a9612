"""The committed, human-reviewed schema and the difference a new candidate makes to it.

The schema is inferred once from a sample, curated by hand and committed as
``schemas/<schema name>/schema.pbtxt`` (package data of the ``schemas`` package; a dataset
definition names its schema, so variants of one table share it), or as ``schema.pbtxt`` in a
dataset's own folder. It is never re-inferred silently: ``infer`` only shows what a
re-inference would change so that a person can decide whether to edit the committed file.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import tensorflow_data_validation as tfdv
from tensorflow_data_validation.utils import schema_util
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from pipeline.definition import DatasetDefinition
from pipeline.validation.stats import feature_stats
from pipeline.verdicts import Verdict

SCHEMA_FILE = "schema.pbtxt"
TRAINING, SERVING = "TRAINING", "SERVING"
_MAX_LISTED_VALUES = 10


def schema_path(dataset: DatasetDefinition, schemas_dir: Path | None = None) -> Path:
    """Where the committed schema of ``dataset`` lives.

    ``schemas_dir`` (a directory of ``<schema name>/schema.pbtxt`` folders) takes precedence;
    then ``schema.pbtxt`` in the dataset's folder; then the ``schemas`` package.
    """
    if schemas_dir is not None:
        return Path(schemas_dir) / dataset.schema / SCHEMA_FILE
    if dataset.folder is not None and (Path(dataset.folder) / SCHEMA_FILE).is_file():
        return Path(dataset.folder) / SCHEMA_FILE
    return Path(str(resources.files("schemas").joinpath(dataset.schema, SCHEMA_FILE)))


def load_schema(dataset: DatasetDefinition, schemas_dir: Path | None = None) -> schema_pb2.Schema:
    """Read the committed schema (independent of the working directory)."""
    path = schema_path(dataset, schemas_dir)
    if not path.is_file():
        raise MissingSchema(dataset, path)
    return tfdv.load_schema_text(str(path))


class MissingSchema(Verdict, FileNotFoundError):
    """No reviewed schema for a dataset: a run cannot validate without one (retrying will not
    help), so it is a verdict; the message says where a schema may live and how to propose one.
    """

    def __init__(self, dataset: DatasetDefinition, path: Path):
        places = [str(path)]
        if dataset.folder is not None and Path(dataset.folder) / SCHEMA_FILE != path:
            places.insert(0, str(Path(dataset.folder) / SCHEMA_FILE))
        super().__init__(
            f"no reviewed schema for dataset {dataset.name!r} (looked for "
            f"{' and '.join(places)}). Propose one from split files, e.g. `python -m "
            f"pipeline.warehouse --dataset {dataset.name} --output SPLITS` then `python -m "
            f"pipeline.validation infer --dataset {dataset.name} --input 'SPLITS/train/*.parquet' "
            f"--output {places[0]}`, and review it"
        )


def infer_candidate_schema(
    stats: statistics_pb2.DatasetFeatureStatisticsList,
    dataset: DatasetDefinition | None = None,
) -> schema_pb2.Schema:
    """Schema TFDV would infer from ``stats`` (a proposal for review, never used to validate).

    With ``dataset`` the candidate is shaped like the contracts the pipeline checks: the
    TRAINING and SERVING environments, the columns a request cannot carry (the label's sources,
    ``unknown_at_serving``) left out of SERVING, and the label (which the warehouse computes and
    validation leaves out) not in it.
    """
    candidate = tfdv.infer_schema(stats, infer_feature_shape=True)
    if dataset is None:
        return candidate
    kept = [f for f in candidate.feature if f.name != dataset.label.name]
    del candidate.feature[:]
    candidate.feature.extend(kept)
    candidate.default_environment[:] = [TRAINING, SERVING]
    for feature in candidate.feature:
        if feature.name in dataset.unknown_at_serving and SERVING not in feature.not_in_environment:
            feature.not_in_environment.append(SERVING)
    return candidate


@dataclasses.dataclass(frozen=True)
class SchemaChange:
    """One difference between the committed schema and new data / a candidate schema."""

    feature: str
    aspect: str  # added | removed | type | presence | domain | value_range
    committed: str
    candidate: str

    def __str__(self) -> str:
        return f"{self.feature}: {self.aspect}: {self.committed} -> {self.candidate}"


def diff_schemas(
    committed: schema_pb2.Schema,
    candidate: schema_pb2.Schema,
    stats: statistics_pb2.DatasetFeatureStatisticsList,
) -> list[SchemaChange]:
    """What differs between ``committed`` and ``candidate`` (inferred from ``stats``).

    Numeric ranges are not inferred by TFDV, so they are compared against the observed
    minimum/maximum in ``stats`` instead.
    """
    old = {f.name: f for f in committed.feature}
    new = {f.name: f for f in candidate.feature}
    changes = [SchemaChange(n, "added", "-", _type_name(new[n])) for n in new if n not in old]
    changes += [SchemaChange(n, "removed", _type_name(old[n]), "-") for n in old if n not in new]
    observed = feature_stats(stats)
    for name in (n for n in old if n in new):
        changes += _type_change(old[name], new[name])
        changes += _presence_change(old[name], new[name], observed.get(name))
        changes += _string_domain_change(committed, candidate, name)
        changes += _range_change(old[name], observed.get(name))
    return changes


def _type_name(feature: schema_pb2.Feature) -> str:
    return schema_pb2.FeatureType.Name(feature.type)


def _type_change(old: schema_pb2.Feature, new: schema_pb2.Feature) -> list[SchemaChange]:
    if old.type == new.type:
        return []
    return [SchemaChange(old.name, "type", _type_name(old), _type_name(new))]


def _presence_change(
    old: schema_pb2.Feature,
    new: schema_pb2.Feature,
    observed: statistics_pb2.FeatureNameStatistics | None,
) -> list[SchemaChange]:
    """The new data is present less often than the committed schema demands."""
    fraction = _present_fraction(observed)
    if fraction is None or fraction >= old.presence.min_fraction:
        return []
    required = "required" if new.presence.min_fraction >= 1.0 else "optional"
    committed = f"min_fraction={old.presence.min_fraction:g}"
    return [SchemaChange(old.name, "presence", committed, f"{required}, present in {fraction:.4f}")]


def _string_domain_change(
    committed: schema_pb2.Schema, candidate: schema_pb2.Schema, name: str
) -> list[SchemaChange]:
    old_domain = schema_util.get_domain(committed, name) if _has_domain(committed, name) else None
    new_domain = schema_util.get_domain(candidate, name) if _has_domain(candidate, name) else None
    if not isinstance(old_domain, schema_pb2.StringDomain):
        return []
    if not isinstance(new_domain, schema_pb2.StringDomain):
        return [SchemaChange(name, "domain", f"{len(old_domain.value)} values", "no closed domain")]
    old_values, new_values = set(old_domain.value), set(new_domain.value)
    changes = []
    if added := sorted(new_values - old_values):
        changes.append(SchemaChange(name, "domain", "+new values", _listing(added)))
    if unseen := sorted(old_values - new_values):
        changes.append(SchemaChange(name, "domain", "values not seen", _listing(unseen)))
    return changes


def _has_domain(schema: schema_pb2.Schema, name: str) -> bool:
    try:
        return schema_util.get_domain(schema, name) is not None
    except ValueError:
        return False


def _range_change(
    old: schema_pb2.Feature, observed: statistics_pb2.FeatureNameStatistics | None
) -> list[SchemaChange]:
    if observed is None or not observed.HasField("num_stats"):
        return []
    domain_kind = old.WhichOneof("domain_info")
    if domain_kind not in ("int_domain", "float_domain"):
        return []
    domain = getattr(old, domain_kind)
    low = domain.min if domain.HasField("min") else float("-inf")
    high = domain.max if domain.HasField("max") else float("inf")
    seen_min, seen_max = observed.num_stats.min, observed.num_stats.max
    if low <= seen_min and seen_max <= high:
        return []
    return [
        SchemaChange(
            old.name,
            "value_range",
            f"[{low:g}, {high:g}]",
            f"observed [{seen_min:g}, {seen_max:g}]",
        )
    ]


def _present_fraction(observed: statistics_pb2.FeatureNameStatistics | None) -> float | None:
    if observed is None:
        return None
    kind = observed.WhichOneof("stats")
    common = getattr(observed, kind).common_stats if kind else None
    if common is None:
        return None
    total = common.num_non_missing + common.num_missing
    return common.num_non_missing / total if total else None


def _listing(values: list[str]) -> str:
    shown = ", ".join(values[:_MAX_LISTED_VALUES])
    more = len(values) - _MAX_LISTED_VALUES
    return f"{shown} (+{more} more)" if more > 0 else shown
