"""Every vocabulary of the transform stage counted in one Beam pass.

``tft.compute_and_apply_vocabulary`` gives each vocabulary its own chain of about thirteen Beam
stages (count, merge, prune, top-k, sizes, order, write); on a small split those stages, not the
data, are most of the analysis's time. ``transforms.blocks.plan_vocabularies`` instead hands all
vocabularies of ``preprocessing_fn`` to one ``tft.experimental.ptransform_analyzer``, whose Beam
side is this module:

1. *make accumulators*: one combine per span adds up, per vocabulary, the ``(distinct tokens,
   counts)`` pairs the graph computed for each batch (``blocks.token_counts``); that is what
   TFT's analyzer cache stores for each span (:class:`TokenCountsCoder`), as it does for its own
   vocabularies, so it must be one accumulator per span;
2. *merge*: the spans' counts add up;
3. *extract*: each vocabulary is pruned and ordered exactly like ``tft.vocabulary`` does (values
   below ``frequency_threshold`` dropped, then the ``top_k`` largest ``(count, token)`` pairs,
   largest first, integers compared as their decimal strings; one placeholder token when nothing
   is kept) and written one token per line, as TFT writes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from transforms.blocks import VocabularySpec, empty_vocabulary_token

# Per vocabulary: token (bytes; int for integer tokens) -> occurrences in the training data.
TokenCounts = list[dict]


def _add(vocabulary: dict, pairs: Iterable[tuple]) -> None:
    for token, count in pairs:
        vocabulary[token] = vocabulary.get(token, 0) + count


def _add_counts(totals: TokenCounts, more: TokenCounts) -> TokenCounts:
    for vocabulary, extra in zip(totals, more, strict=True):
        _add(vocabulary, extra.items())
    return totals


class _SumTokenCounts(beam.CombineFn):
    """Token counts per vocabulary, from batches of ``(tokens, counts)`` arrays or from sums."""

    def __init__(self, vocabularies: int, from_batches: bool):
        self._vocabularies = vocabularies
        self._from_batches = from_batches

    def create_accumulator(self) -> TokenCounts:
        return [{} for _ in range(self._vocabularies)]

    def add_input(self, totals: TokenCounts, element) -> TokenCounts:
        if not self._from_batches:
            return _add_counts(totals, element)
        for index, vocabulary in enumerate(totals):
            tokens, counts = element[2 * index], element[2 * index + 1]
            _add(vocabulary, zip(tokens.tolist(), counts.tolist(), strict=True))
        return totals

    def merge_accumulators(self, accumulators: Iterable[TokenCounts]) -> TokenCounts:
        accumulators = iter(accumulators)
        totals = next(accumulators)
        for more in accumulators:
            _add_counts(totals, more)
        return totals

    def extract_output(self, totals: TokenCounts) -> TokenCounts:
        return totals


class TokenCountsCoder(tft.experimental.PTransformAnalyzerCacheCoder):
    """JSON of every vocabulary's token counts, for TFT's analyzer cache (bytes as Latin-1)."""

    def encode_cache(self, cache: TokenCounts) -> bytes:
        encoded = [
            sorted([_token_text(token), count] for token, count in vocabulary.items())
            for vocabulary in cache
        ]
        return json.dumps(encoded, separators=(",", ":")).encode()

    def decode_cache(self, encoded_cache: bytes) -> TokenCounts:
        return [
            {_token_from_text(token): count for token, count in vocabulary}
            for vocabulary in json.loads(encoded_cache)
        ]


def _token_text(token) -> str | int:
    return token.decode("latin-1") if isinstance(token, bytes) else token


def _token_from_text(token) -> bytes | int:
    return token.encode("latin-1") if isinstance(token, str) else token


class _VocabulariesStep(beam.PTransform):
    """A step of the analyzer. Its ``repr`` enters TFT's analyzer cache keys, so it must not
    be the default one, which holds the object's address and would change every run."""

    def __init__(self, vocabularies: int):
        super().__init__()
        self._vocabularies = vocabularies

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocabularies={self._vocabularies})"


class _CountTokens(_VocabulariesStep):
    def expand(self, batches):
        # Without a default: an empty span adds nothing to merge, and the combine saves the
        # stage that would inject an empty accumulator (the merge across spans keeps its own).
        return (
            batches
            | "SumTokenCounts"
            >> beam.CombineGlobally(
                _SumTokenCounts(self._vocabularies, from_batches=True)
            ).without_defaults()
        )


class _MergeTokenCounts(_VocabulariesStep):
    def expand(self, partial_counts):
        return partial_counts | "MergeTokenCounts" >> beam.CombineGlobally(
            _SumTokenCounts(self._vocabularies, from_batches=False)
        )


def ordered_vocabulary(spec: VocabularySpec, counts: dict) -> list[bytes]:
    """The tokens ``tft.vocabulary`` keeps for ``spec``, in its order (most frequent first)."""
    pairs = [
        (count, token if isinstance(token, bytes) else str(token).encode())
        for token, count in counts.items()
        if not spec.frequency_threshold or count >= spec.frequency_threshold
    ]
    pairs.sort(reverse=True)
    if spec.top_k is not None:
        pairs = pairs[: spec.top_k]
    return [token for _, token in pairs] or [empty_vocabulary_token(spec.is_string)]


class _WriteVocabularies(beam.PTransform):
    """Writes each vocabulary's file; outputs its path and size, two outputs per vocabulary.

    The files go where TFT writes its own vocabularies, the analysis's temporary directory
    (``tft_beam.Context``), not into the fresh random directory TFT would give this step: the
    path ends up in transform_fn's graph, and a random one would change its bytes every run.
    """

    def __init__(self, specs: Sequence[VocabularySpec]):
        super().__init__()
        self._specs = tuple(specs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[spec.filename for spec in self._specs]})"

    def expand(self, totals):
        directory = tft_beam.Context.create_base_temp_dir()
        written = totals | "Write" >> beam.Map(self._write_all, directory)
        outputs = []
        for index, spec in enumerate(self._specs):
            for part, name in enumerate(("Path", "Size")):
                outputs.append(
                    written
                    | f"{name}[{spec.filename}]" >> beam.Map(lambda w, i=index, p=part: w[i][p])
                )
        return tuple(outputs)

    def _write_all(self, totals: TokenCounts, directory: str) -> list[tuple[str, int]]:
        tf.io.gfile.makedirs(directory)
        result = []
        for spec, counts in zip(self._specs, totals, strict=True):
            tokens = ordered_vocabulary(spec, counts)
            path = os.path.join(directory, spec.filename)
            with tf.io.gfile.GFile(path, "wb") as file:
                file.write(b"".join(token + b"\n" for token in tokens))
            result.append((path, len(tokens)))
        return result


def make_analyzer(specs: Sequence[VocabularySpec]) -> tft.experimental.CacheablePTransformAnalyzer:
    """The analyzer ``transforms.blocks.plan_vocabularies`` runs for ``specs``, cache included."""
    return tft.experimental.CacheablePTransformAnalyzer(
        make_accumulators_ptransform=_CountTokens(len(specs)),
        merge_accumulators_ptransform=_MergeTokenCounts(len(specs)),
        extract_output_ptransform=_WriteVocabularies(specs),
        cache_coder=TokenCountsCoder(),
    )
