"""Distillation from stored teacher outputs: run a language-model teacher
once over a token data set, keep each real token's `k` most probable next
tokens and their log-probabilities in sharded files, and stream them back
beside the inputs, so that the student trains without the teacher in
memory (a teacher too large to run beside it, or one run elsewhere).

The stored distribution is completed as `keras_cskd.ops.top_k_logits`
documents (the mass outside the top `k`, stored exactly, spread evenly over
the other tokens), and the `Distiller` hands it to its losses as the
teacher's logits, so every loss works from the cache.

A cache is a folder of NumPy files: `index.json` (k, the temperature, the
vocabulary size, the sequences' shape, the shards), `mask.npy` (which
positions of which sequence are stored) and per shard `ids`, `log_probs`
and `tail` arrays of the stored tokens, read memory-mapped: a batch reads
its own rows only.
"""

import json
import math
from pathlib import Path

import keras
import numpy as np

from keras_cskd._files import write_text_atomically

INDEX = "index.json"
FORMAT = 1


def cache_teacher_top_k(
    teacher,
    x,
    directory,
    k=32,
    temperature=1.0,
    mask=None,
    batch_size=32,
    dtype="float16",
    shard_tokens=1 << 20,
    verbose=0,
):
    """Runs `teacher` over the token sequences `x` and stores, for every real
    token, its `k` most probable classes at `temperature` (ids) with their
    log-probabilities and the log of the mass outside them. Returns the
    `TopKCache`.

    Args:
        teacher: a model mapping `x` to logits `(batch, length, vocabulary)`.
        x: the inputs, NumPy: an array `(n, length)` or a dict of arrays
            with `n` rows (e.g. keras-hub's `{"token_ids", "padding_mask"}`).
        directory: the folder to write (created; an existing cache there
            is refused rather than overwritten).
        k: how many classes to keep per token (1 to the vocabulary size).
        temperature: the teacher's temperature (1 for the usual language
            model distillation). Losses at another temperature soften the
            completed distribution (`keras_cskd.ops.top_k_logits`).
        mask: `(n, length)`, which positions to store (non-zero). By
            default `x["padding_mask"]`, else the teacher output's Keras
            mask, else every position.
        batch_size: sequences per teacher call.
        dtype: of the stored log-probabilities, `"float16"` (2 bytes, about
            3 significant digits) or `"float32"`. Ids are `uint16` for a
            vocabulary of at most 65,536 tokens, else `int32`; the tail is
            float32.
        shard_tokens: stored tokens per shard file.
        verbose: 1 prints a line per shard written.

    Example:

    >>> import keras, numpy as np, tempfile
    >>> from keras_cskd import cache_teacher_top_k
    >>> teacher = keras.Sequential([keras.Input((5,), dtype="int32"),
    ...                             keras.layers.Embedding(10, 4), keras.layers.Dense(10)])
    >>> tokens = np.arange(15).reshape(3, 5) % 10
    >>> cache = cache_teacher_top_k(teacher, tokens, tempfile.mkdtemp() + "/c", k=4)
    >>> cache.tokens, cache.k, cache.bytes_per_token
    (15, 4, 20)
    >>> top = cache.read([0, 2])
    >>> top["ids"].shape, top["log_probs"].shape, top["tail"].shape
    ((2, 5, 4), (2, 5, 4), (2, 5))
    """
    from keras import ops

    from keras_cskd import _backend
    from keras_cskd.checks import models as models_checks
    from keras_cskd.ops.top_k import teacher_top_k

    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a whole number of at least 1, got {k!r}.")
    if shard_tokens < 1 or batch_size < 1:
        raise ValueError("shard_tokens and batch_size must be at least 1.")
    directory = Path(directory)
    if (directory / INDEX).exists():
        raise FileExistsError(
            f"{directory} already holds a top-k cache: open it with TopKCache({str(directory)!r}) "
            "or write to another folder."
        )
    models_checks.check_no_softmax_head(teacher, "teacher")
    leaves = keras.tree.flatten(x)
    if not leaves or not all(isinstance(leaf, np.ndarray) for leaf in leaves):
        raise TypeError(
            "x must be a NumPy array or a dict of NumPy arrays with one row a sequence."
        )
    count = len(leaves[0])
    if count == 0 or any(len(leaf) != count for leaf in leaves):
        raise ValueError(
            f"x must hold the same number (> 0) of sequences in every array, got "
            f"{[len(leaf) for leaf in leaves]}."
        )
    if mask is None and isinstance(x, dict) and "padding_mask" in x:
        mask = x["padding_mask"]
    directory.mkdir(parents=True, exist_ok=True)

    writer = _ShardWriter(directory, dtype, shard_tokens, verbose)
    masks, vocabulary, length = [], None, None
    for start in range(0, count, batch_size):
        rows = slice(start, start + batch_size)
        batch = keras.tree.map_structure(lambda leaf, rows=rows: leaf[rows], x)
        logits = teacher(batch, training=False)
        if len(logits.shape) != 3:
            raise ValueError(
                f"The teacher's logits must be (batch, length, vocabulary), got shape "
                f"{tuple(logits.shape)}: cache_teacher_logits stores other outputs."
            )
        vocabulary, length = int(logits.shape[-1]), int(logits.shape[1])
        if k > vocabulary:
            raise ValueError(f"k = {k} is more than the teacher's {vocabulary} classes.")
        if mask is not None:
            kept = np.asarray(mask[start : start + batch_size]) != 0
        else:
            keras_mask = _backend.keras_mask(logits)
            kept = (
                np.asarray(ops.convert_to_numpy(keras_mask)) != 0
                if keras_mask is not None
                else np.ones(logits.shape[:2], bool)
            )
        if kept.shape != tuple(logits.shape[:2]):
            raise ValueError(
                f"mask has shape {kept.shape[1:]} per batch, the logits' positions "
                f"{tuple(logits.shape[1:2])}."
            )
        ids, log_probs, tail = (
            ops.convert_to_numpy(value) for value in teacher_top_k(logits, k, temperature)
        )
        if not np.all(np.isfinite(log_probs[kept])):
            raise ValueError("The teacher's logits are not finite at stored positions.")
        writer.add(ids[kept], log_probs[kept], tail[kept], vocabulary)
        masks.append(kept)
    writer.close()
    mask_all = np.concatenate(masks)
    np.save(directory / "mask.npy", mask_all)
    index = {
        "format": FORMAT,
        "k": k,
        "temperature": float(temperature),
        "vocabulary_size": vocabulary,
        "sequences": count,
        "length": length,
        "tokens": int(mask_all.sum()),
        "log_probs_dtype": dtype,
        "ids_dtype": writer.ids_dtype,
        "shards": writer.shards,
    }
    write_text_atomically(directory / INDEX, json.dumps(index))
    return TopKCache(directory)


class _ShardWriter:
    def __init__(self, directory, dtype, shard_tokens, verbose):
        self.directory, self.dtype = directory, dtype
        self.shard_tokens, self.verbose = shard_tokens, verbose
        self.pending, self.pending_tokens, self.shards = [], 0, []
        self.ids_dtype = None

    def add(self, ids, log_probs, tail, vocabulary):
        self.ids_dtype = "uint16" if vocabulary <= 1 << 16 else "int32"
        self.pending.append((ids, log_probs, tail))
        self.pending_tokens += len(ids)
        while self.pending_tokens >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def close(self):
        if self.pending_tokens:
            self._flush(self.pending_tokens)

    def _flush(self, size):
        ids, log_probs, tail = (np.concatenate(parts) for parts in zip(*self.pending))
        name = f"shard-{len(self.shards):05d}"
        np.save(self.directory / f"{name}-ids.npy", ids[:size].astype(self.ids_dtype))
        np.save(self.directory / f"{name}-log_probs.npy", log_probs[:size].astype(self.dtype))
        np.save(self.directory / f"{name}-tail.npy", tail[:size].astype("float32"))
        self.shards.append({"name": name, "tokens": int(size)})
        if self.verbose:
            print(f"cache_teacher_top_k: {name}, {size} tokens")
        self.pending = [(ids[size:], log_probs[size:], tail[size:])]
        self.pending_tokens = len(ids) - size


class TopKCache:
    """A top-k cache written by `cache_teacher_top_k`, read memory-mapped.

    `read(indices)` returns a batch of sequences' teacher outputs as
    `{"ids", "log_probs", "tail"}` arrays `(batch, length, k)` /
    `(batch, length)`; positions that were not stored hold a harmless
    placeholder (the losses never see them: they are masked). `dataset`
    streams them with the inputs for `Distiller.fit`.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        index_path = self.directory / INDEX
        if not index_path.exists():
            raise FileNotFoundError(
                f"{self.directory} holds no top-k cache ({INDEX} is missing): write one with "
                "keras_cskd.cache_teacher_top_k."
            )
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{index_path} is of an unknown format {self.index.get('format')}.")
        self.k = self.index["k"]
        self.temperature = self.index["temperature"]
        self.vocabulary_size = self.index["vocabulary_size"]
        self.tokens = self.index["tokens"]
        self.mask = np.load(self.directory / "mask.npy")
        # Row of each sequence's first stored token in the concatenated shards.
        self._offsets = np.concatenate([[0], np.cumsum(self.mask.sum(axis=1))])
        self._shard_starts = np.cumsum([0] + [s["tokens"] for s in self.index["shards"]])
        self._open = {}

    def __len__(self):
        return len(self.mask)

    @property
    def bytes_per_token(self):
        """Bytes stored per real token (ids, log-probabilities, tail)."""
        ids = np.dtype(self.index["ids_dtype"]).itemsize
        log_probs = np.dtype(self.index["log_probs_dtype"]).itemsize
        return self.k * (ids + log_probs) + 4

    def _shard(self, number):
        if number not in self._open:
            name = self.index["shards"][number]["name"]
            self._open[number] = tuple(
                np.load(self.directory / f"{name}-{part}.npy", mmap_mode="r")
                for part in ("ids", "log_probs", "tail")
            )
        return self._open[number]

    def _rows(self, start, stop):
        """The stored tokens `start:stop` (across shards) as float32/int32."""
        parts = []
        first = int(np.searchsorted(self._shard_starts, start, side="right") - 1)
        number = first
        while start < stop:
            shard_start, shard_stop = self._shard_starts[number], self._shard_starts[number + 1]
            take = min(stop, shard_stop)
            ids, log_probs, tail = self._shard(number)
            a, b = start - shard_start, take - shard_start
            parts.append((ids[a:b], log_probs[a:b], tail[a:b]))
            start, number = take, number + 1
        if not parts:
            return (
                np.zeros((0, self.k), "int32"),
                np.zeros((0, self.k), "float32"),
                np.zeros((0,), "float32"),
            )
        ids, log_probs, tail = (np.concatenate(p) for p in zip(*parts))
        return ids.astype("int32"), log_probs.astype("float32"), tail.astype("float32")

    def read(self, indices):
        """The teacher outputs of the sequences `indices` (NumPy)."""
        indices = np.asarray(indices, int)
        length = self.mask.shape[1]
        ids = np.broadcast_to(np.arange(self.k, dtype="int32"), (len(indices), length, self.k))
        ids = ids.copy()
        # Placeholder at unstored positions: k equally likely classes, no tail.
        log_probs = np.full((len(indices), length, self.k), -math.log(self.k), "float32")
        tail = np.full((len(indices), length), math.log(1e-30), "float32")
        for row, sequence in enumerate(indices):
            kept = self.mask[sequence]
            stored = self._rows(self._offsets[sequence], self._offsets[sequence + 1])
            ids[row, kept], log_probs[row, kept], tail[row, kept] = stored
        return {"ids": ids, "log_probs": log_probs, "tail": tail}

    def dataset(self, x, y=None, sample_weight=None, batch_size=32, shuffle=True, seed=0):
        """A `keras.utils.PyDataset` of `({"x": x, "teacher_top_k": top-k},
        y, sample_weight)` batches for `Distiller.fit`, the teacher's
        outputs read from the cache per batch. `x`, `y`, `sample_weight`
        are the arrays the cache was written from (same sequences, same
        order)."""
        return TopKDataset(self, x, y, sample_weight, batch_size, shuffle, seed)


class TopKDataset(keras.utils.PyDataset):
    """Batches of inputs with their cached top-k teacher outputs
    (`TopKCache.dataset`)."""

    def __init__(self, cache, x, y=None, sample_weight=None, batch_size=32, shuffle=True, seed=0):
        super().__init__()
        self.cache, self.x, self.y, self.sample_weight = cache, x, y, sample_weight
        count = len(keras.tree.flatten(x)[0])
        if count != len(cache):
            raise ValueError(
                f"x holds {count} sequences and the cache {len(cache)}: pass the arrays the "
                "cache was written from."
            )
        self.batch_size, self.shuffle = batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(count)
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self):
        return math.ceil(len(self._order) / self.batch_size)

    def __getitem__(self, index):
        rows = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        take = lambda value: keras.tree.map_structure(lambda leaf: leaf[rows], value)  # noqa: E731
        inputs = {"x": take(self.x), "teacher_top_k": self.cache.read(rows)}
        batch = (inputs,)
        if self.y is not None:
            batch += (take(self.y),)
            if self.sample_weight is not None:
                batch += (take(self.sample_weight),)
        return batch if len(batch) > 1 else batch[0]

    def on_epoch_end(self):
        if self.shuffle:
            self._rng.shuffle(self._order)


__all__ = ["TopKCache", "TopKDataset", "cache_teacher_top_k"]
