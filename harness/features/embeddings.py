"""Content-keyed cache of frozen-backbone embeddings, so each fold trains only a head.

A frozen backbone maps a slice to the same vector in every fold and protocol, so it is
computed once. Entries are stored per series under a key made of the series' content
key (the ingestion cache's hash of its pixels) and the encoder key: backbone name,
weights digest, image size, input preprocessing version (and anything else that shapes
the input, e.g. the gap between cuts). Inside an entry, vectors are indexed by slice
index (``-1`` for a sample that is the whole series), so any fold picks its rows.

A series entry grows as folds ask for slices it lacks. Extraction holds a lock per
encoder key and cache, so folds running side by side push a slice through the backbone
once (the later one reads the vectors the earlier one stored); every write is atomic, so
a reader never sees a half-written entry.

Extraction runs channels-last, in batches of :data:`EXTRACT_BATCH` padded to full size,
with every usable core (the folds that need the vectors wait on the lock meanwhile).
Why each: channels-last is about 2x faster on CPU for these backbones; a fixed batch
shape keeps a slice's vector independent of which slices shared its batch (which fold
extracts first decides that, and a different batch shape can pick another kernel); and
the thread count is the machine's, not ``--jobs``', so it does not move a result
(measured on the 2-core default: 1- and 2-thread vectors bitwise equal; 80 slices/s at
224 px against 14 contiguous on one thread).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness.atomic import atomic_write
from harness.hashing import json_digest
from harness.locks import file_lock, lock_name
from harness.parallel.threads import limit_threads, usable_cores
from harness.tasks import TaskData

#: Bump when the pixels -> tensor path changes (rescaling, resizing, channel handling).
PREPROCESS_VERSION = "minmax01-bilinear-antialias-imagenet-v1"
#: Bump when how the encoder runs changes its float results (layout, padding); the batch
#: size is a key of its own.
EXTRACT_VERSION = "channels-last-padded-v2"
#: Slices per forward pass in extraction; every batch is padded to this size.
EXTRACT_BATCH = 16

#: (data, rows) -> (len(rows), C, H, W) input tensor for the encoder.
ImagesFn = Callable[[TaskData, pd.DataFrame], torch.Tensor]


class EmbeddingCache:
    """Encoder outputs per sample, computed once per slice and encoder key."""

    def __init__(self, cache_dir: Path | None, batch_size: int = EXTRACT_BATCH, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.device = device
        #: torch threads while extracting (None: every usable core).
        self.threads = threads
        #: Slices pushed through the encoder, and slices read from the cache, so far.
        self.n_extracted = 0
        self.n_read = 0
        self._memory: dict[str, dict[int, np.ndarray]] = {}

    def embeddings(self, data: TaskData, rows: pd.DataFrame, encoder_key: dict[str, Any],
                   encoder: nn.Module, images: ImagesFn) -> np.ndarray:
        """(len(rows), d) float32 embeddings of ``rows``, in row order."""
        if len(rows) == 0:
            return np.zeros((0, 0), np.float32)
        tag = self.tag(encoder_key)
        entries: dict[str, dict[int, np.ndarray]] = {}
        missing: list[int] = []
        for pos, (img, z) in enumerate(zip(rows["image_id"], rows["slice_index"])):
            if img not in entries:
                entries[img] = self._load(data, img, tag)
            if int(z) not in entries[img]:
                missing.append(pos)
        if missing:
            with self._extraction_lock(tag):
                # another fold may have stored these slices while this one waited
                missing = self._still_missing(data, rows, missing, entries, tag)
                todo = rows.iloc[missing].drop_duplicates(["image_id", "slice_index"])
                if len(todo):
                    vectors = self._extract(data, todo, encoder, images)
                    touched = set()
                    for img, z, vec in zip(todo["image_id"], todo["slice_index"], vectors):
                        entries[img][int(z)] = vec
                        touched.add(img)
                    for img in touched:
                        self._store(data, img, tag, entries[img])
        self.n_read += len(rows) - len(missing)  # what the cache served, in memory or on disk
        return np.stack([entries[img][int(z)] for img, z in zip(rows["image_id"], rows["slice_index"])])

    def tag(self, encoder_key: dict[str, Any]) -> str:
        """The key under which this cache stores an encoder's vectors: the encoder's key
        plus everything of the extraction that moves the floats."""
        return json_digest({"preprocess": PREPROCESS_VERSION, "extract": EXTRACT_VERSION,
                            "batch": self.batch_size, **encoder_key}, 24)

    def _extraction_lock(self, tag: str) -> AbstractContextManager[None]:
        """One extractor per encoder key and cache at a time.

        Why: folds that start together (two protocols' first folds) would otherwise each
        push the whole cohort through the backbone; the one that waits then reads the
        other's vectors instead (measured: two 2-minute extractions on the 2-core default).
        """
        if self.cache_dir is None:
            return nullcontext()
        return file_lock(self.cache_dir / "locks" / lock_name("embeddings", tag), what="extracting embeddings")

    def _still_missing(self, data: TaskData, rows: pd.DataFrame, missing: list[int],
                       entries: dict[str, dict[int, np.ndarray]], tag: str) -> list[int]:
        """The positions of ``missing`` whose slice is still in no stored entry."""
        for img in {rows["image_id"].iloc[pos] for pos in missing}:
            path = self._path(data, img, tag)
            if path is not None and path.exists():
                with np.load(path) as f:
                    for z, v in zip(f["z"], f["x"]):
                        entries[img].setdefault(int(z), v)
        return [pos for pos in missing if int(rows["slice_index"].iloc[pos]) not in entries[rows["image_id"].iloc[pos]]]

    def _extract(self, data: TaskData, rows: pd.DataFrame, encoder: nn.Module, images: ImagesFn) -> np.ndarray:
        encoder.eval()
        dev = torch.device(self.device)
        encoder = encoder.to(memory_format=torch.channels_last)
        out = []
        with torch.no_grad(), limit_threads(self.threads or usable_cores()):
            for start in range(0, len(rows), self.batch_size):
                x = images(data, rows.iloc[start:start + self.batch_size])
                n = len(x)
                if n < self.batch_size:  # a fixed batch shape: see the module docstring
                    x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
                x = x.to(dev, memory_format=torch.channels_last)
                out.append(encoder(x)[:n].float().cpu().numpy())
        self.n_extracted += len(rows)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _path(self, data: TaskData, image_id: str, tag: str) -> Path | None:
        key = data.content_keys.get(image_id)
        if self.cache_dir is None or not key:
            return None
        return self.cache_dir / f"{key}-{tag}.npz"

    def _load(self, data: TaskData, image_id: str, tag: str) -> dict[int, np.ndarray]:
        path = self._path(data, image_id, tag)
        mem_key = f"{path or image_id}|{tag}"
        if mem_key in self._memory:
            return self._memory[mem_key]
        entry: dict[int, np.ndarray] = {}
        if path is not None and path.exists():
            with np.load(path) as f:
                entry = {int(z): v for z, v in zip(f["z"], f["x"])}
        self._memory[mem_key] = entry
        return entry

    def _store(self, data: TaskData, image_id: str, tag: str, entry: dict[int, np.ndarray]) -> None:
        """Write ``entry`` whole. Called under the extraction lock, after :meth:`_still_missing`
        merged what other processes stored, so nothing on disk is lost by overwriting it."""
        path = self._path(data, image_id, tag)
        if path is None:
            return
        zs = np.array(sorted(entry), dtype=np.int64)
        xs = np.stack([entry[int(z)] for z in zs]).astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.savez(fh, z=zs, x=xs))
