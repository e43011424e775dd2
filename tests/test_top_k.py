"""Distillation from a teacher's stored top-k outputs: the ops against NumPy
in float64 (the top k, the tail, the completed distribution, the sparse KD
and its gradient) up to 131,072 classes; the sharded cache written and read
back across shard boundaries; a Distiller trained from the cache equal to
the live teacher when nothing is cut (k = V), and close to the completed
distribution's KD when k < V."""

import math

import keras
import numpy as np
import pytest
import reference
from helpers import to_numpy, value_and_grad

import keras_cskd
from keras_cskd import ops as kd_ops


def _log_softmax(z, temperature=1.0):
    """NumPy float64 log-softmax over the last axis of any rank."""
    z = np.asarray(z)
    return reference.log_softmax(z.reshape(-1, z.shape[-1]), temperature).reshape(z.shape)


def _softmax(z, temperature=1.0):
    return np.exp(_log_softmax(z, temperature))


def _completed(z, k, temperature=1.0):
    """NumPy float64: the top-k ids, their log-probabilities, the tail's
    log mass and the completed distribution (tail spread evenly)."""
    log_p = _log_softmax(np.asarray(z, "float64"), temperature)
    ids = np.argsort(-log_p, axis=-1, kind="stable")[..., :k]
    top = np.take_along_axis(log_p, ids, -1)
    rest = np.ones_like(log_p, bool)
    np.put_along_axis(rest, ids, False, -1)
    tail = np.log(np.where(rest, np.exp(log_p), 0).sum(-1))
    vocabulary = z.shape[-1]
    completed = np.repeat((np.exp(tail) / max(vocabulary - k, 1))[..., None], vocabulary, -1)
    np.put_along_axis(completed, ids, np.exp(top), -1)
    return ids, top, tail, completed


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_teacher_top_k_against_numpy(temperature):
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(3, 5, 50)) * 3).astype("float32")
    ids, log_probs, tail = (to_numpy(v) for v in kd_ops.teacher_top_k(z, 7, temperature))
    want_ids, want_top, want_tail, _ = _completed(z, 7, temperature)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(log_probs, want_top, atol=1e-5)
    np.testing.assert_allclose(tail, want_tail, atol=1e-5)


def test_a_tiny_tail_is_exact():
    """A confident teacher: the tail is 1e-12 of the mass; `1 - sum` in
    float32 would give 0 (log -inf) or 6e-8."""
    z = np.array([[30.0, 2.0, 0.0, 0.0]], "float32")
    _, _, tail = kd_ops.teacher_top_k(z, 2)
    want = _completed(z, 2)[2]
    np.testing.assert_allclose(to_numpy(tail), want, rtol=1e-4)
    assert to_numpy(tail)[0] < -25


def test_top_k_logits_complete_the_distribution():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 3, 40)).astype("float32")
    ids, top, tail, completed = _completed(z, 5)
    dense = to_numpy(kd_ops.top_k_logits(ids.astype("int32"), top.astype("float32"), 40))
    np.testing.assert_allclose(_softmax(dense), completed, atol=1e-6)
    # Without the stored tail, it is what the log-probabilities leave of 1.
    dense = to_numpy(kd_ops.top_k_logits(ids.astype("int32"), top.astype("float32"), 40, None))
    np.testing.assert_allclose(_softmax(dense), completed, atol=1e-5)
    # k = V: the teacher itself.
    ids, top, _, _ = _completed(z, 40)
    dense = to_numpy(kd_ops.top_k_logits(ids.astype("int32"), top.astype("float32"), 40))
    np.testing.assert_allclose(_softmax(dense), _softmax(z), atol=1e-6)


@pytest.mark.parametrize("classes,k", [(40, 5), (40, 40), (131_072, 32)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_kd_equals_kd_of_the_completed_teacher(classes, k, temperature):
    rng = np.random.default_rng(classes + k)
    positions = 3 if classes > 1000 else 6
    z = (rng.normal(size=(positions, classes)) * 4).astype("float32")
    s = rng.normal(size=(positions, classes)).astype("float32")
    ids, top, tail, completed = _completed(z, k)
    ids, top, tail = ids.astype("int32"), top.astype("float32"), tail.astype("float32")
    # NumPy float64: KD of the completed distribution softened at tau.
    p = completed ** (1.0 / temperature)
    p /= p.sum(-1, keepdims=True)
    log_q = _log_softmax(s.astype("float64"), temperature)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = temperature**2 * np.where(p > 0, p * (np.log(p) - log_q), 0).sum(-1)

    def sparse(t_unused, student):
        return keras.ops.mean(kd_ops.top_k_kl_divergence(ids, top, student, temperature, tail))

    def dense(t_unused, student):
        target = kd_ops.top_k_logits(ids, top, classes, tail)
        return keras.ops.mean(kd_ops.kl_divergence_distillation(target, student, temperature))

    value, grad = value_and_grad(sparse, z, s)
    dense_value, dense_grad = value_and_grad(dense, z, s)
    np.testing.assert_allclose(value, want.mean(), rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(value, dense_value, rtol=2e-4, atol=1e-5)
    # The gradient of KD with respect to s is tau (softmax(s / tau) - p) / B.
    want_grad = temperature * (np.exp(log_q) - p) / positions
    scale = np.abs(want_grad).max()
    np.testing.assert_allclose(grad, want_grad, atol=2e-5 * scale + 1e-9)
    np.testing.assert_allclose(dense_grad, want_grad, atol=2e-5 * scale + 1e-9)


def _token_models(vocabulary=30, length=8, seed=0):
    def lm(width, seed):
        keras.utils.set_random_seed(seed)
        tokens = keras.Input((length,), dtype="int32", name="token_ids")
        padding = keras.Input((length,), dtype="int32", name="padding_mask")
        normal = keras.initializers.RandomNormal(stddev=1.0)
        hidden = keras.layers.Embedding(vocabulary, width, embeddings_initializer=normal)(tokens)
        hidden = keras.layers.Dense(width, activation="tanh")(hidden)
        # Confident enough that the top k and the tail differ (a KD of ~1).
        logits = keras.layers.Dense(
            vocabulary, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0)
        )(hidden)
        return keras.Model({"token_ids": tokens, "padding_mask": padding}, logits)

    return lm(16, seed), lm(8, seed + 1)


def _token_data(count=10, vocabulary=30, length=8, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocabulary, (count, length)).astype("int32")
    lengths = rng.integers(2, length + 1, count)
    padding = (np.arange(length) < lengths[:, None]).astype("int32")
    tokens[padding == 0] = 0
    labels = np.roll(tokens, -1, axis=1)
    weights = np.roll(padding, -1, axis=1).astype("float32")
    weights[:, -1] = 0
    return {"token_ids": tokens, "padding_mask": padding}, labels, weights


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cache_round_trip_across_shards(tmp_path, dtype):
    teacher, _ = _token_models()
    x, _, _ = _token_data()
    # 7 tokens a shard: sequences straddle shard files.
    cache = keras_cskd.cache_teacher_top_k(
        teacher, x, tmp_path / "cache", k=4, batch_size=3, dtype=dtype, shard_tokens=7
    )
    real = x["padding_mask"] != 0
    assert cache.tokens == real.sum() and len(cache.index["shards"]) == math.ceil(real.sum() / 7)
    assert cache.bytes_per_token == 4 * (2 + (2 if dtype == "float16" else 4)) + 4
    logits = to_numpy(teacher(x, training=False))
    want_ids, want_top, want_tail, _ = _completed(logits, 4)
    reopened = keras_cskd.TopKCache(tmp_path / "cache")
    rows = [9, 0, 4]
    top = reopened.read(rows)
    kept = real[rows]
    np.testing.assert_array_equal(top["ids"][kept], want_ids[rows][kept])
    tolerance = 2e-3 * np.abs(want_top).max() if dtype == "float16" else 1e-5
    np.testing.assert_allclose(top["log_probs"][kept], want_top[rows][kept], atol=tolerance)
    np.testing.assert_allclose(top["tail"][kept], want_tail[rows][kept], atol=1e-5)
    with pytest.raises(FileExistsError, match="already holds a top-k cache"):
        keras_cskd.cache_teacher_top_k(teacher, x, tmp_path / "cache", k=4)
    with pytest.raises(FileNotFoundError, match="holds no top-k cache"):
        keras_cskd.TopKCache(tmp_path)


def test_cache_reads_any_batch_of_sequences(tmp_path):
    """A batch of sequences in any order, repeated, or entirely padding reads
    the teacher's stored top k at the real tokens and the placeholder (k
    equally likely classes, no tail) elsewhere, across shard files."""
    teacher, _ = _token_models()
    x, _, _ = _token_data(count=12)
    x["padding_mask"][3] = 0  # a sequence with no real token
    x["token_ids"][3] = 0
    cache = keras_cskd.cache_teacher_top_k(
        teacher, x, tmp_path / "cache", k=4, batch_size=5, dtype="float32", shard_tokens=5
    )
    real = x["padding_mask"] != 0
    want_ids, want_top, want_tail, _ = _completed(to_numpy(teacher(x, training=False)), 4)
    rows = [*np.random.default_rng(1).permutation(12), 3, 7, 7, 0]
    top = cache.read(rows)
    assert top["ids"].shape == (len(rows), 8, 4) and top["tail"].shape == (len(rows), 8)
    for i, sequence in enumerate(rows):
        kept = real[sequence]
        np.testing.assert_array_equal(top["ids"][i][kept], want_ids[sequence][kept])
        np.testing.assert_allclose(top["log_probs"][i][kept], want_top[sequence][kept], atol=1e-5)
        np.testing.assert_allclose(top["tail"][i][kept], want_tail[sequence][kept], atol=1e-5)
        np.testing.assert_array_equal(
            top["ids"][i][~kept], np.tile(np.arange(4), ((~kept).sum(), 1))
        )
        np.testing.assert_allclose(top["log_probs"][i][~kept], -np.log(4.0), rtol=1e-6)
        assert np.all(top["tail"][i][~kept] < -60)


def _first_step_loss(distiller, batch):
    x, y, sample_weight = batch
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
    return float(logs["loss"])


def test_distiller_from_the_cache_equals_the_live_teacher_when_k_is_v(tmp_path):
    """k = V, float32: the cached step is the live teacher's step."""
    teacher, student = _token_models()
    x, y, weights = _token_data()
    cache = keras_cskd.cache_teacher_top_k(
        teacher, x, tmp_path / "c", k=30, dtype="float32", shard_tokens=11
    )
    (cached_batch,) = [cache.dataset(x, y, weights, batch_size=10, shuffle=False)[0]]
    live = keras_cskd.Distiller(student, teacher, "kd", check_roles=False)
    cached = keras_cskd.Distiller(student, None, "kd", check_roles=False)
    live_loss = _first_step_loss(live, (x, y, weights))
    cached_loss = _first_step_loss(cached, cached_batch)
    np.testing.assert_allclose(cached_loss, live_loss, rtol=1e-5)


def test_distiller_from_a_top_k_cache_trains_on_the_completed_teacher(tmp_path):
    """k < V: the KD term is KD of the completed distribution on the real
    tokens (NumPy), and `fit` streams the cache through a PyDataset."""
    teacher, student = _token_models()
    x, y, weights = _token_data()
    cache = keras_cskd.cache_teacher_top_k(teacher, x, tmp_path / "c", k=5, dtype="float32")
    batch = cache.dataset(x, y, weights, batch_size=10, shuffle=False)[0]
    distiller = keras_cskd.Distiller(
        student,
        None,
        keras_cskd.losses.KLDivergenceDistillation(temperature=2.0),
        distillation_loss_weight=1.0,
        check_roles=False,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    x_batch, y_batch, weights_batch = batch
    logs = distiller.train_on_batch(x_batch, y_batch, sample_weight=weights_batch, return_dict=True)
    loss = float(logs["distillation_loss"])
    logits = to_numpy(teacher(x, training=False))
    s = to_numpy(student(x, training=False))
    completed = _completed(logits, 5)[3]
    p = completed ** (1 / 2.0)
    p /= p.sum(-1, keepdims=True)
    kd = 4.0 * (p * (np.log(p) - _log_softmax(s.astype("float64"), 2.0))).sum(-1)
    real = weights > 0
    assert kd[real].mean() > 0.1
    np.testing.assert_allclose(loss, kd[real].mean(), rtol=1e-4)
    history = distiller.fit(cache.dataset(x, y, weights, batch_size=4), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_bad_cache_input_is_refused(tmp_path):
    teacher, _ = _token_models()
    x, _, _ = _token_data()
    with pytest.raises(ValueError, match="k = 31 is more than the teacher's 30 classes"):
        keras_cskd.cache_teacher_top_k(teacher, x, tmp_path / "a", k=31)
    with pytest.raises(ValueError, match="dtype must be"):
        keras_cskd.cache_teacher_top_k(teacher, x, tmp_path / "b", dtype="int8")
    cache = keras_cskd.cache_teacher_top_k(teacher, x, tmp_path / "c", k=3)
    with pytest.raises(ValueError, match="x holds 5 sequences and the cache 10"):
        cache.dataset({key: value[:5] for key, value in x.items()})
