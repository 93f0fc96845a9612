"""Preprocessing building blocks, each a small TensorFlow function.

Instance-level blocks (constant imputation, log, hashing, crosses, polynomial terms, one-hot;
calendar and clock parts are in ``transforms.calendar``) only look at the row at hand. Full-pass
blocks call a ``tft`` analyzer: during *analyze* TFT computes the statistic over the whole
training split (means, variances, quantiles, vocabularies, principal components), and afterwards
the statistic is a constant in the transform graph, the same for train, eval, test and serving.

All raw inputs are batches: a ``tf.SparseTensor`` of shape ``[batch, 1]`` for a nullable raw
column (that is how both TFXIO and ``tf.io.parse_example`` hand over a VarLen feature) or a dense
``[batch]`` tensor. Every block is deterministic and uses only element-wise arithmetic on the
rows (no matrix products whose summation order could depend on the batch size), so the Beam
transform and the serving graph compute bit-identical features.

TFT builds these blocks into a TF1 graph (``pipeline.transform.TF_COMPAT_V1``), where ``==`` and
``!=`` between tensors compare the Python objects, not the values: use ``tf.equal`` and
``tf.not_equal``. Analyzer results become constants there, which TensorFlow's graph optimizer
folds (``x / c`` turns into ``x * (1 / c)``): a block that promises an exact value at a bound
sets it explicitly (:func:`scale_0_1`).

What the model may rely on:

* a categorical block returns a scalar ``int64`` id per row in ``[0, num_categories)`` and the
  range is recorded in the transformed schema (by the vocabulary and bucket analyzers, or by
  :func:`record_categories`), so ``TFTransformOutput.num_buckets_for_transformed_feature``
  answers for every categorical output;
* a dense block returns ``float32`` of shape ``[batch]`` or ``[batch, k]`` with ``k`` fixed by
  its parameters.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import weakref
from collections.abc import Callable, Sequence
from fractions import Fraction

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import analyzer_nodes, nodes, schema_inference

# Rank error of the quantile sketches behind median imputation and outlier clipping: the
# returned quantile of fraction q lies between the true quantiles of q - EPSILON and q + EPSILON.
QUANTILE_EPSILON = 0.001
# Finest quantile grid the clipping bounds may sit on (0.001 steps).
MAX_QUANTILE_GRID = 1000

Raw = tf.Tensor | tf.SparseTensor

# ---- one analyzer per statistic ---------------------------------------------------------------

# Per traced graph: statistics already asked for, by what they are computed over.
_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _shared(kind: str, over: tuple, params: tuple, compute: Callable):
    """``compute()`` once per traced graph for the same tensors ``over`` and ``params``.

    Several features of one column ask for the same statistic (a polynomial of the z-scored
    distance needs the distance's mean imputation, clip bounds, mean and variance, exactly as the
    distance's own z-score does). Each ``tft`` call is an analyzer of its own, and every analyzer
    adds to each of TFT's traces, saved graphs and Beam combines; the second ask gets the first
    one's tensors instead, which hold the very same training statistic. Eager calls (outside an
    analysis) compute directly.
    """
    if tf.executing_eagerly():
        return compute()
    cache = _SHARED.setdefault(tf.compat.v1.get_default_graph(), {})
    key = (kind, tuple(id(t) for t in over), params)
    if key not in cache:
        cache[key] = (over, compute())  # keeps ``over`` alive, so its ids stay unique
    return cache[key][1]


def _mean(values: tf.Tensor, name: str = "mean") -> tf.Tensor:
    return _shared("mean", (values,), (), lambda: tft.mean(values, name=name))


def _var(values: tf.Tensor, name: str = "var") -> tf.Tensor:
    return _shared("var", (values,), (), lambda: tft.var(values, name=name))


# ---- missing values ---------------------------------------------------------------------------


def fill_in_missing(x: Raw, default) -> tf.Tensor:
    """Dense ``[batch]`` tensor with ``default`` where the raw value is missing."""
    if not isinstance(x, tf.SparseTensor):
        return tf.reshape(x, [-1])
    default = tf.constant(default, dtype=x.dtype)
    dense = tf.sparse.to_dense(
        tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
    )
    return tf.squeeze(dense, axis=1)


def is_present(x: Raw) -> tf.Tensor:
    """``[batch]`` bool: the row carries a value (and, for floats, not NaN)."""
    if isinstance(x, tf.SparseTensor):
        present = fill_in_missing(
            tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.bool), x.dense_shape), False
        )
        values = fill_in_missing(x, _zero(x.dtype))
    else:
        values = tf.reshape(x, [-1])
        present = tf.ones_like(values, tf.bool)
    if values.dtype.is_floating:
        present = tf.logical_and(present, tf.logical_not(tf.math.is_nan(values)))
    return present


def present_values(x: Raw) -> tf.Tensor:
    """1-D float32 tensor of the values the batch carries (missing and NaN left out).

    Full-pass statistics for imputation and clipping are computed over these, so a missing value
    never pulls a mean towards a placeholder.
    """

    def compute():
        values = x.values if isinstance(x, tf.SparseTensor) else tf.reshape(x, [-1])
        values = tf.cast(values, tf.float32)
        return tf.boolean_mask(values, tf.logical_not(tf.math.is_nan(values)))

    return _shared("present", (x,), (), compute)


def _zero(dtype: tf.DType):
    return "" if dtype == tf.string else 0


def impute_constant(x: Raw, value) -> tf.Tensor:
    """Dense float32 ``[batch]``: ``value`` where missing (or NaN)."""
    filled = tf.cast(fill_in_missing(x, _zero(x.dtype)), tf.float32)
    return tf.where(is_present(x), filled, tf.cast(value, tf.float32))


def impute_mean(x: Raw, name: str | None = None) -> tf.Tensor:
    """Dense float32 ``[batch]``: missing values replaced by the training mean of present ones."""
    with tf.name_scope(name or "impute_mean"):
        mean = _mean(present_values(x))
        return impute_constant(x, _finite_or_zero(mean))


def impute_median(x: Raw, name: str | None = None) -> tf.Tensor:
    """Dense float32 ``[batch]``: missing values replaced by the training median of present ones.

    The median is TFT's approximate quantile (rank error at most ``QUANTILE_EPSILON``).
    """
    with tf.name_scope(name or "impute_median"):
        (median,) = quantile_values(present_values(x), [Fraction(1, 2)], name="median")
        return impute_constant(x, _finite_or_zero(median))


def _finite_or_zero(value: tf.Tensor) -> tf.Tensor:
    """Statistics of an empty training column are NaN; impute 0 then rather than NaN."""
    value = tf.cast(value, tf.float32)
    return tf.where(tf.math.is_finite(value), value, tf.zeros_like(value))


# ---- outliers, scaling ------------------------------------------------------------------------


def quantile_grid(fractions: Sequence[float]) -> tuple[int, list[int]]:
    """Smallest ``num_buckets`` whose boundaries include every fraction, and their indices.

    ``tft.quantiles(x, n)`` returns the ``n - 1`` boundaries at ``1/n, 2/n, ...``; the fraction
    ``q`` is boundary ``q * n - 1``. E.g. (0.01, 0.99) -> (100, [0, 98]).
    """
    exact = [Fraction(str(f)) if isinstance(f, float) else Fraction(f) for f in fractions]
    for f in exact:
        if not 0 < f < 1:
            raise ValueError(f"quantile fraction {float(f)} is not in (0, 1)")
    num_buckets = math.lcm(*(f.denominator for f in exact))
    if num_buckets > MAX_QUANTILE_GRID:
        raise ValueError(f"quantile fractions {fractions} need a grid finer than 1/1000")
    return num_buckets, [int(f * num_buckets) - 1 for f in exact]


def quantile_values(values: tf.Tensor, fractions: Sequence, name: str | None = None) -> list:
    """Scalar float32 tensors: the training quantiles of ``values`` at ``fractions``."""
    num_buckets, indices = quantile_grid(fractions)
    boundaries = _shared(
        "quantiles",
        (values,),
        (num_buckets,),
        lambda: tf.reshape(tft.quantiles(values, num_buckets, QUANTILE_EPSILON, name=name), [-1]),
    )
    return [boundaries[i] for i in indices]


def clip_to_quantiles(
    x: tf.Tensor,
    lower: float,
    upper: float,
    reference: tf.Tensor | None = None,
    name: str | None = None,
) -> tf.Tensor:
    """``x`` clipped to the training quantiles at ``lower`` and ``upper`` (e.g. 0.01 and 0.99).

    The bounds are computed over ``reference`` (e.g. the present values of the raw column) when
    given, else over ``x`` itself.
    """
    with tf.name_scope(name or "clip_to_quantiles"):
        source = tf.reshape(tf.cast(x if reference is None else reference, tf.float32), [-1])
        low, high = quantile_values(source, [lower, upper], name="bounds")
        return tf.clip_by_value(tf.cast(x, tf.float32), low, high)


def log1p_nonnegative(x: tf.Tensor) -> tf.Tensor:
    """log1p(max(x, 0)): tames skewed non-negative amounts (fares, durations)."""
    return tf.math.log1p(tf.maximum(tf.cast(x, tf.float32), 0.0))


@dataclasses.dataclass(frozen=True)
class CleanedColumn:
    """A numeric column after cleaning, with what its scaling statistics must be computed on.

    ``reference`` is ``None`` when the cleaning needed no training statistics (the values are
    their own reference); otherwise it is the 1-D tensor of values *before* the full-pass
    cleaning steps (the present values for mean/median imputation, the unclipped values for
    clipping). Computing scaling statistics over ``reference`` keeps them in the same single
    analysis pass as the imputation value and the clip bounds.
    """

    values: tf.Tensor
    reference: tf.Tensor | None = None
    bounds: tuple[tf.Tensor, tf.Tensor] | None = None  # clip bounds, on the values' scale


def clean_numeric(
    x: Raw,
    default=0.0,
    impute: str = "constant",
    clip: Sequence[float] | None = None,
    log: bool = False,
    name: str | None = None,
) -> CleanedColumn:
    """A raw numeric column imputed, clipped, then log-transformed (dense float32 ``[batch]``).

    ``impute`` is ``"constant"`` (``default``), ``"mean"`` or ``"median"`` (over the present
    training values); a NaN counts as missing. ``clip`` is a pair of quantile fractions whose
    training values bound the column, computed over the present raw values. ``log`` applies
    ``log1p(max(x, 0))`` last. Features cleaning the same column the same way share one result.
    """
    return _shared(
        "clean",
        (x,),
        (default, impute, tuple(clip) if clip is not None else None, log),
        lambda: _clean_numeric(x, default, impute, clip, log, name),
    )


def _clean_numeric(x: Raw, default, impute: str, clip, log: bool, name: str | None):
    with tf.name_scope(name or "clean_numeric"):
        present = present_values(x)
        filled = impute_constant(x, 0.0 if default is None else default)
        if impute == "constant":
            values, reference = filled, filled
        elif impute == "mean":
            values, reference = impute_mean(x), present
        elif impute == "median":
            values, reference = impute_median(x), present
        else:
            raise ValueError(f"unknown imputation {impute!r}")
        bounds = None
        if clip is not None:
            lower, upper = clip
            bounds = tuple(quantile_values(present, [lower, upper], name="bounds"))
            values = tf.clip_by_value(values, *bounds)
        if log:
            values, reference = log1p_nonnegative(values), log1p_nonnegative(reference)
            bounds = None if bounds is None else tuple(log1p_nonnegative(b) for b in bounds)
        full_pass = impute != "constant" or clip is not None
        return CleanedColumn(values, reference if full_pass else None, bounds)


def standardize(x: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor) -> tf.Tensor:
    """(x - mean) / sqrt(variance); just x - mean for a constant column (as TFT does)."""
    centered = tf.cast(x, tf.float32) - tf.cast(mean, tf.float32)
    std = tf.sqrt(tf.cast(variance, tf.float32))
    return tf.where(std > 0, centered / tf.where(std > 0, std, 1.0), centered)


def zscore(x: tf.Tensor, reference: tf.Tensor | None = None, name: str | None = None) -> tf.Tensor:
    """(x - mean) / std with mean and variance from the training split.

    The statistics are those of ``x`` itself, or of ``reference`` when given (see
    :class:`CleanedColumn`): then a mean-imputed value scales to 0 and a clipped value to the
    z-score of its bound.
    """
    if reference is None:
        return tft.scale_to_z_score(tf.cast(x, tf.float32), name=name)
    with tf.name_scope(name or "zscore"):
        flat = reference
        if flat.dtype != tf.float32 or flat.shape.rank != 1:
            flat = tf.reshape(tf.cast(reference, tf.float32), [-1])
        return standardize(x, _mean(flat), _var(flat))


def log_zscore(x: tf.Tensor, name: str | None = None) -> tf.Tensor:
    """z-score of log1p(max(x, 0)): for skewed non-negative amounts (fares, durations)."""
    return zscore(log1p_nonnegative(x), name=name)


def scale_0_1(
    x: tf.Tensor,
    reference: tf.Tensor | None = None,
    bounds: tuple[tf.Tensor, tf.Tensor] | None = None,
    name: str | None = None,
) -> tf.Tensor:
    """(x - min) / (max - min) with min and max from the training split.

    ``bounds`` (clip bounds, the min and max of the clipped column) replace the analyzers;
    ``reference`` supplies the values whose min and max are taken (default: ``x``).
    """
    x = tf.cast(x, tf.float32)
    if bounds is None and reference is None:
        return tft.scale_to_0_1(x, name=name)
    with tf.name_scope(name or "scale_0_1"):
        if bounds is None:
            reference = tf.reshape(tf.cast(reference, tf.float32), [-1])
            bounds = (tft.min(reference, name="min"), tft.max(reference, name="max"))
        low, high = (tf.cast(b, tf.float32) for b in bounds)
        span = high - low
        # The maximum maps to exactly 1: with the bounds folded into constants, TensorFlow's
        # graph optimizer turns ``/ span`` into ``* (1 / span)``, which can round it to 1 - 2**-24.
        scaled = tf.where(tf.equal(x, high), 1.0, (x - low) / tf.where(span > 0, span, 1.0))
        return tf.where(span > 0, scaled, 0.5)


# ---- categorical representations --------------------------------------------------------------


def record_categories(ids: tf.Tensor, num_categories: int) -> tf.Tensor:
    """Record ``[0, num_categories)`` as ``ids``' domain in the transformed schema; returns ids.

    This is the annotation ``tft.apply_buckets`` and ``tft.compute_and_apply_vocabulary`` make,
    so ``TFTransformOutput.num_buckets_for_transformed_feature`` works for ``ids`` too. Call it
    on the tensor that becomes the output feature.
    """
    if not tf.executing_eagerly():
        # Only while TFT traces the graph: called eagerly (a unit test, a notebook), TFT's
        # collection would keep eager tensors in the global graph and break every later trace.
        schema_inference.set_tensor_schema_override(
            ids, tf.constant(0, tf.int64), tf.constant(num_categories - 1, tf.int64)
        )
    return ids


def quantile_bucket(
    x: tf.Tensor, num_buckets: int, reference: tf.Tensor | None = None, name: str | None = None
) -> tf.Tensor:
    """Bucket id in ``[0, num_buckets)`` from approximate quantiles of the training split.

    The quantiles are those of ``x``, or of ``reference`` when given.
    """
    x = tf.cast(x, tf.float32)
    if reference is None:
        return tft.bucketize(x, num_buckets=num_buckets, name=name)
    with tf.name_scope(name or "quantile_bucket"):
        # tft.bucketize's default error tolerance.
        boundaries = tft.quantiles(
            tf.reshape(tf.cast(reference, tf.float32), [-1]),
            num_buckets,
            min(1.0 / num_buckets, 0.01),
            name="boundaries",
        )
        return tft.apply_buckets(x, boundaries)


@dataclasses.dataclass(frozen=True)
class VocabularySpec:
    """Which values one vocabulary keeps: the parameters of ``tft.vocabulary`` this project uses.

    ``filename`` names the vocabulary's file in the transform output; ``is_string`` says whether
    its tokens are strings (else integers, written in decimal).
    """

    filename: str
    top_k: int | None
    frequency_threshold: int | None
    is_string: bool


# A vocabulary file holds one token per line: like tft.vocabulary, leave out the empty string
# and strings with a line break.
_NOT_A_TOKEN = r"^$|\C*[\n\r]\C*"  # RE2: \C is any byte
# Per traced graph: the vocabulary file each planned vocabulary's analyzer returns, by filename.
_PLANNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_counts(tokens: tf.Tensor | tf.SparseTensor | tf.RaggedTensor) -> list[tf.Tensor]:
    """``[distinct tokens, their counts]`` in one batch: what a vocabulary analyzer accumulates.

    Counting inside the graph leaves the analyzer one small pair of arrays per batch instead of
    every token.
    """
    if isinstance(tokens, tf.RaggedTensor):
        values = tokens.flat_values
    elif isinstance(tokens, tf.SparseTensor):
        values = tokens.values
    else:
        values = tf.reshape(tokens, [-1])
    if values.dtype == tf.string:
        values = tf.boolean_mask(
            values, tf.logical_not(tf.strings.regex_full_match(values, _NOT_A_TOKEN))
        )
    else:
        values = tf.cast(values, tf.int64)
    distinct, _, counts = tf.unique_with_counts(values, out_idx=tf.int64)
    return [distinct, counts]


def plan_vocabularies(
    requests: Sequence[tuple[VocabularySpec, tf.Tensor | tf.RaggedTensor]],
    make_analyzer: Callable[[tuple[VocabularySpec, ...]], object],
) -> None:
    """Count every requested vocabulary in one analyzer; :func:`vocabulary` then looks ids up in it.

    ``tft.compute_and_apply_vocabulary`` adds about thirteen Beam stages per vocabulary (count,
    merge, prune, top-k, two sizes, order and write), each a bundle to set up whatever the data
    size; that is most of the analysis's fixed cost. ``make_analyzer(specs)`` returns the
    ``tft.experimental.CacheablePTransformAnalyzer`` that counts all of them in one combine over
    :func:`token_counts` pairs and writes every file (``pipeline.vocabularies``: the Beam side
    lives with the jobs), so TFT's analyzer cache still keeps each span's counts. The files hold
    exactly what ``tft.vocabulary`` writes for the same parameters.
    """
    if tf.executing_eagerly() or not requests:
        return
    specs = tuple(spec for spec, _ in requests)
    inputs = [tensor for _, tokens in requests for tensor in token_counts(tokens)]
    outputs = []
    for spec in specs:
        default_file = analyzer_nodes.TemporaryAssetInfo(
            empty_vocabulary_token(spec.is_string), "text"
        )
        outputs.append(analyzer_nodes.TensorInfo(tf.string, [], default_file))
        outputs.append(analyzer_nodes.TensorInfo(tf.int64, [], None))
    with tf.compat.v1.name_scope("vocabularies"):
        outputs = _cacheable_ptransform_analyzer(inputs, make_analyzer(specs), outputs)
    planned = _PLANNED.setdefault(tf.compat.v1.get_default_graph(), {})
    for spec, path, size in zip(specs, outputs[::2], outputs[1::2], strict=True):
        tft.analyzers.register_vocab(spec.filename, vocabulary_size=size)
        planned[spec.filename] = path


# An intermediate step's output is a Beam value, never a tensor: its info only counts outputs.
_ACCUMULATOR = analyzer_nodes.TensorInfo(tf.string, [], None)


def _cacheable_ptransform_analyzer(inputs: list, analyzer, outputs: list) -> tuple:
    """``tft.experimental.ptransform_analyzer`` of a cacheable analyzer with several outputs.

    TFT's own helper gives every step of a ``CacheablePTransformAnalyzer`` as many outputs as
    the analyzer has, and the cache accepts only steps with one: here accumulating and merging
    have one output (all vocabularies' counts), and only the final step has one per file.

    The steps are those of TFT's own combiners: accumulate per span (what the cache keeps),
    merge across spans, extract. TFT's helper adds a merge per span between the first two,
    which costs two Beam stages and merges nothing when, as here, the accumulation already
    yields one accumulator per span.
    """
    steps = (
        ("make_accumulators", analyzer.make_accumulators_ptransform, True, analyzer.cache_coder),
        ("global_merge_accumulators", analyzer.merge_accumulators_ptransform, False, None),
    )
    value = analyzer_nodes.get_input_tensors_value_nodes(inputs)
    for scope, ptransform, partitionable, cache_coder in steps:
        with tf.compat.v1.name_scope(scope):
            value = nodes.apply_operation(
                analyzer_nodes.PTransform,
                value,
                ptransform=ptransform,
                is_partitionable=partitionable,
                cache_coder=cache_coder,
                output_tensor_info_list=[_ACCUMULATOR],
            )
    with tf.compat.v1.name_scope("extract_output"):
        results = nodes.apply_multi_output_operation(
            analyzer_nodes.PTransform,
            value,
            ptransform=analyzer.extract_output_ptransform,
            is_partitionable=False,
            output_tensor_info_list=outputs,
        )
    return tuple(map(analyzer_nodes.wrap_as_tensor, results))


def empty_vocabulary_token(is_string: bool) -> bytes:
    """The one token TFT writes into a vocabulary that keeps nothing (a table needs a row)."""
    return b"49d0cd50-04bb-48c0-bc6f-5b575dce351a" if is_string else b"-1"


def vocabulary(
    x: tf.Tensor | tf.RaggedTensor,
    top_k: int | None,
    num_oov_buckets: int,
    vocab_filename: str,
    frequency_threshold: int | None = None,
) -> tf.Tensor | tf.RaggedTensor:
    """Id of ``x`` in the training vocabulary (most frequent first), unseen values -> OOV ids.

    The vocabulary keeps the ``top_k`` most frequent values that occur at least
    ``frequency_threshold`` times in training (either limit optional); equally frequent values
    are ordered by their bytes, largest first. Ids ``[0, vocab_size)`` are known values;
    ``[vocab_size, vocab_size + num_oov_buckets)`` are hashed out-of-vocabulary buckets, where
    rare and unseen values land. Empty strings never enter a vocabulary. A vocabulary planned
    with :func:`plan_vocabularies` is looked up in its file; any other is computed by its own
    ``tft`` analyzer.
    """
    planned = None
    if not tf.executing_eagerly():
        planned = _PLANNED.get(tf.compat.v1.get_default_graph(), {}).get(vocab_filename)
    if planned is not None:
        return tft.apply_vocabulary(x, planned, num_oov_buckets=num_oov_buckets)
    return tft.compute_and_apply_vocabulary(
        x,
        top_k=top_k,
        frequency_threshold=frequency_threshold,
        num_oov_buckets=num_oov_buckets,
        vocab_filename=vocab_filename,
    )


def identity(x: tf.Tensor, num_buckets: int) -> tf.Tensor:
    """Integer already used as a category id, clipped into ``[0, num_buckets)``."""
    return record_categories(
        tf.clip_by_value(tf.cast(x, tf.int64), 0, num_buckets - 1), num_buckets
    )


def one_hot(ids: tf.Tensor, depth: int) -> tf.Tensor:
    """float32 ``[batch, depth]`` with a 1 at each row's id (all zeros for an id outside)."""
    return tf.one_hot(tf.cast(ids, tf.int64), depth, dtype=tf.float32)


def split_tokens(x: tf.Tensor, delimiter: str) -> tf.RaggedTensor:
    """``[batch, None]`` tokens of a delimited string column, stripped, empty tokens dropped."""
    tokens = tf.strings.strip(tf.strings.split(tf.reshape(x, [-1]), sep=delimiter))
    return tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)


def multi_hot(token_ids: tf.RaggedTensor, depth: int) -> tf.Tensor:
    """float32 ``[batch, depth]`` with a 1 for every id present in the row (duplicates count once).

    Negative ids (out of vocabulary without OOV buckets) are left out.
    """
    keep = tf.logical_and(token_ids.values >= 0, token_ids.values < depth)
    rows = tf.boolean_mask(token_ids.value_rowids(), keep)
    cols = tf.boolean_mask(tf.cast(token_ids.values, tf.int64), keep)
    batch = token_ids.nrows(out_type=tf.int64)
    counts = tf.scatter_nd(
        tf.stack([rows, cols], axis=1),
        tf.ones_like(cols, tf.float32),
        tf.stack([batch, tf.constant(depth, tf.int64)]),
    )
    return tf.ensure_shape(tf.minimum(counts, 1.0), [None, depth])


def hash_bucket(x: tf.Tensor, hash_buckets: int) -> tf.Tensor:
    """Id in ``[0, hash_buckets)``: FarmHash fingerprint of the value (as a string) mod buckets.

    No vocabulary and no analysis pass: unseen values get an id too, at the price of collisions.
    The fingerprint is stable across processes, platforms and versions.
    """
    strings = x if x.dtype == tf.string else tf.strings.as_string(x)
    return record_categories(tft.hash_strings(strings, hash_buckets), hash_buckets)


# ---- construction ------------------------------------------------------------------------------


def hashed_cross(values: list[tf.Tensor], hash_buckets: int) -> tf.Tensor:
    """Id in ``[0, hash_buckets)`` of the combination of several categorical values.

    Uses TensorFlow's FarmHash fingerprint, which is stable across processes and versions, so a
    serving request hashes to the bucket training saw.
    """
    as_strings = [v if v.dtype == tf.string else tf.strings.as_string(v) for v in values]
    joined = tf.strings.join(as_strings, separator="_x_")
    return record_categories(tf.strings.to_hash_bucket_fast(joined, hash_buckets), hash_buckets)


def polynomial_exponents(num_inputs: int, degree: int) -> list[tuple[int, ...]]:
    """Input indices of every monomial of total degree 2..``degree``, in a fixed order.

    Two inputs, degree 2: ``[(0, 0), (0, 1), (1, 1)]`` i.e. x^2, x*y, y^2.
    """
    return [
        combo
        for d in range(2, degree + 1)
        for combo in itertools.combinations_with_replacement(range(num_inputs), d)
    ]


def polynomial(columns: Sequence[tf.Tensor], degree: int = 2) -> tf.Tensor:
    """float32 ``[batch, m]``: the monomials of :func:`polynomial_exponents` of ``columns``.

    Linear terms are left out (they are features of their own); feed z-scored inputs so the
    products stay on a comparable scale.
    """
    columns = [tf.cast(tf.reshape(c, [-1]), tf.float32) for c in columns]
    terms = []
    for combo in polynomial_exponents(len(columns), degree):
        term = columns[combo[0]]
        for index in combo[1:]:
            term = term * columns[index]
        terms.append(term)
    return tf.stack(terms, axis=1)


def pca(
    columns: Sequence[tf.Tensor],
    output_dim: int,
    standardize_inputs: bool = True,
    references: Sequence[tf.Tensor | None] | None = None,
    name: str | None = None,
) -> tf.Tensor:
    """float32 ``[batch, output_dim]``: projection onto the top principal components.

    With ``standardize_inputs`` each input is z-scored first (statistics over its ``references``
    entry if given), i.e. PCA of the correlation matrix, as ``tft.pca`` recommends for inputs in
    different units; without it, PCA of the covariance of the inputs as they are (fine for
    inputs on one scale, e.g. logs of positive amounts). The components come from ``tft.pca``
    over the training rows, in decreasing order of explained variance, each with its
    largest-magnitude loading made positive so the sign does not depend on the eigen solver.
    The output is the projection of the inputs centred on their training means, a sum of
    element-wise products in a fixed order, identical for any batch size.

    Analysis phases: ``tft.pca`` needs its inputs, so if they depend on training statistics
    (standardization, full-pass cleaning) the components take a second pass over the data.
    """
    with tf.name_scope(name or "pca"):
        references = references or [None] * len(columns)
        inputs = [tf.cast(tf.reshape(c, [-1]), tf.float32) for c in columns]
        if standardize_inputs:
            inputs = [
                zscore(c, reference=r, name=f"z{i}")
                for i, (c, r) in enumerate(zip(inputs, references, strict=True))
            ]
        stacked = tf.stack(inputs, axis=1)
        means = tft.mean(stacked, reduce_instance_dims=False, name="means")
        components = tft.pca(stacked, output_dim, tf.float64, name="components")
        components = canonical_signs(tf.cast(components, tf.float32))
        projection = (inputs[0] - means[0])[:, None] * components[0][None, :]
        for i in range(1, len(inputs)):
            projection = projection + (inputs[i] - means[i])[:, None] * components[i][None, :]
        return tf.ensure_shape(projection, [None, output_dim])


def canonical_signs(components: tf.Tensor) -> tf.Tensor:
    """Flip each column of ``[n, k]`` so that its largest-magnitude entry is positive."""
    pivot = tf.argmax(tf.abs(components), axis=0)
    pivot_values = tf.gather(tf.transpose(components), pivot, batch_dims=1)
    return components * tf.where(pivot_values < 0, -1.0, 1.0)[None, :]


def geo_cell(
    latitude: tf.Tensor,
    longitude: tf.Tensor,
    present: tf.Tensor,
    latitude_boundaries: tf.Tensor,
    longitude_boundaries: tf.Tensor,
    num_cells: int,
) -> tf.Tensor:
    """Grid cell id of a point: latitude bucket x longitude bucket, one extra id for no point.

    With ``n`` latitude and ``m`` longitude boundaries (sorted, rank 2 ``[1, n]``) the grid has
    ``(n + 1) * (m + 1)`` cells: cell ``lat_bucket * (m + 1) + lon_bucket``, where a bucket is
    the number of boundaries ``<=`` the coordinate. Rows without both coordinates
    (``present`` false) get id ``(n + 1) * (m + 1)``; ``num_cells`` must equal that plus one.
    """
    lat_bucket = tft.apply_buckets(tf.cast(latitude, tf.float32), latitude_boundaries)
    lon_bucket = tft.apply_buckets(tf.cast(longitude, tf.float32), longitude_boundaries)
    lon_cells = tf.cast(tf.shape(longitude_boundaries)[1] + 1, tf.int64)
    cell = lat_bucket * lon_cells + lon_bucket
    cell = tf.where(present, cell, tf.constant(num_cells - 1, tf.int64))
    return record_categories(cell, num_cells)


def quantile_boundaries(values: tf.Tensor, num_buckets: int, name: str | None = None) -> tf.Tensor:
    """``[1, num_buckets - 1]`` training quantile boundaries of ``values``."""
    return tf.reshape(
        tft.quantiles(values, num_buckets, QUANTILE_EPSILON, name=name), [1, num_buckets - 1]
    )
