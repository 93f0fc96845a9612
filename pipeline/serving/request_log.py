"""A sample of served requests, as raw ``tf.Example`` TFRecord files, for the serving-log check.

The examples record exactly what was sent: those the model received (JSON requests already
encoded, a missing value as an absent feature), or for a signature fed raw tensors
(``serving_raw``) the same rows as examples, its missing-value markers as absent features. So the
validation stage can compute serving statistics with TFDV and compare them with training's
(skew). Sampled examples are buffered and written as whole files: each goes to a hidden temporary
name and is renamed to ``requests-<UTC time>-<pid>-<seq>.tfrecord`` when complete, so a reader
globbing ``*.tfrecord`` never sees a partial file, and several server processes can share one
directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import tensorflow as tf

log = logging.getLogger("pipeline.serving")

FILE_PATTERN = "requests-*.tfrecord"


class RequestLog:
    """Samples requests with probability ``sample_rate`` and flushes them as TFRecord files."""

    def __init__(
        self,
        directory: Path,
        sample_rate: float,
        flush_records: int = 1000,
        flush_seconds: float = 10.0,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample rate must be within [0, 1], got {sample_rate}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self._flush_records = flush_records
        self._flush_seconds = flush_seconds
        self._random = random.Random(seed)
        self._buffer: list[bytes] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._sequence = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> bool:
        """Whether to keep the current request (probability ``sample_rate``)."""
        with self._lock:
            return self._random.random() < self.sample_rate

    def record(self, examples: list[bytes]) -> None:
        """Buffer a sampled request's examples; never raises."""
        with self._lock:
            self._buffer.extend(examples)
            full = len(self._buffer) >= self._flush_records
        if full:
            self.flush()

    def flush(self) -> Path | None:
        """Write the buffered examples as one new file; returns its path (None if empty)."""
        with self._lock:
            records, self._buffer = self._buffer, []
        if not records:
            return None
        try:
            return self._write(records)
        except Exception:  # logging must never break serving
            log.exception("could not write %d request log records", len(records))
            return None

    def _write(self, records: list[bytes]) -> Path:
        with self._write_lock:
            self._sequence += 1
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            final = self.directory / f"requests-{stamp}-{os.getpid()}-{self._sequence:06d}.tfrecord"
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", dir=self.directory)
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the log from the validation job
        try:
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in records:
                    writer.write(record)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return final

    def start(self) -> None:
        """Flush every ``flush_seconds`` in a daemon thread, so a quiet server still writes."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            self.flush()
