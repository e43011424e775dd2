"""Chunked token losses (`keras_cskd.ops.chunked`): values against float64
NumPy, gradients with respect to the student's hidden states, kernel and bias
against the unchunked computation (logits, then the divergence), on the
active backend; chunk sizes that do not divide the token count, masks (an
all-zero one gives 0 and a zero gradient), the student's cross-entropy in
the same pass, and compiled steps."""

import functools

import keras
import numpy as np
import pytest
import reference
from helpers import BACKEND, to_numpy
from keras import ops

from keras_cskd import losses
from keras_cskd import ops as kd_ops

pytestmark = pytest.mark.usefixtures("fast_jax_compilation")

TOKENS, D_S, D_T, VOCAB = (2, 7), 4, 6, 13  # 14 tokens: chunks of 3, 4, 5 leave a remainder


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    h_s = rng.normal(size=(*TOKENS, D_S)).astype("float32")
    w_s = rng.normal(size=(D_S, VOCAB)).astype("float32")
    b_s = rng.normal(size=(VOCAB,)).astype("float32")
    h_t = (2 * rng.normal(size=(*TOKENS, D_T))).astype("float32")
    w_t = rng.normal(size=(D_T, VOCAB)).astype("float32")
    b_t = rng.normal(size=(VOCAB,)).astype("float32")
    mask = (rng.random(TOKENS) > 0.3).astype("float32") * rng.uniform(0.5, 2.0, TOKENS)
    labels = rng.integers(0, VOCAB, TOKENS)
    return h_s, w_s, b_s, h_t, w_t, b_t, mask.astype("float32"), labels


def _grads(fn, *arrays):
    """`(fn(*arrays), [d fn / d array])` as float64 NumPy (compiled under JAX)."""
    if BACKEND == "jax":
        import jax

        value, grads = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(arrays)))))(*arrays)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
    else:
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors)
    return float(to_numpy(value)), [to_numpy(g) for g in grads]


def _compiled(fn):
    """`fn` under `jax.jit` under JAX (an eager JAX loop compiles its body at
    every call), unchanged elsewhere."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    return fn


NUMPY_DIVERGENCES = {
    "kl": reference.kd_per_sample,
    "reverse_kl": reference.reverse_kl_per_sample,
    "jsd": reference.jsd_per_sample,
    "skew_kl": reference.skew_kl_per_sample,
    "tv": reference.tv_per_sample,
}
KERAS_DIVERGENCES = {
    "kl": kd_ops.kl_divergence_distillation,
    "reverse_kl": kd_ops.reverse_kl_divergence,
    "jsd": kd_ops.jensen_shannon_divergence,
    "skew_kl": kd_ops.skew_kl_divergence,
    "tv": kd_ops.total_variation_distance,
}


def _numpy_loss(name, h_s, w_s, b_s, h_t, w_t, b_t, mask, temperature):
    f = reference.f64
    s = (f(h_s) @ f(w_s) + f(b_s)).reshape(-1, VOCAB)
    t = (f(h_t) @ f(w_t) + f(b_t)).reshape(-1, VOCAB)
    per_token = NUMPY_DIVERGENCES[name](t, s, temperature=temperature)
    w = f(mask).reshape(-1)
    return float(np.sum(w * per_token) / np.sum(w))


def _unchunked(per_token, h_s, w_s, b_s, h_t, w_t, b_t, mask):
    s = ops.matmul(h_s, w_s) + b_s
    t = ops.matmul(h_t, w_t) + b_t
    return ops.sum(mask * per_token(t, s)) / ops.sum(mask)


@pytest.mark.parametrize(
    "name, temperature, chunk_size",
    [("kl", 2.0, 3), ("reverse_kl", 1.0, 4), ("jsd", 1.0, 5), ("skew_kl", 1.5, 3), ("tv", 1.0, 14)],
)
def test_values_and_gradients_equal_the_unchunked_loss(name, temperature, chunk_size):
    h_s, w_s, b_s, h_t, w_t, b_t, mask, _ = _inputs()
    h_t, w_t, b_t, m = (ops.convert_to_tensor(a) for a in (h_t, w_t, b_t, mask))

    def chunked(h, w, b):
        return kd_ops.chunked_distillation_loss(
            h, w, h_t, w_t, name, mask=m, chunk_size=chunk_size, temperature=temperature,
            student_bias=b, teacher_bias=b_t,
        )  # fmt: skip

    per_token = functools.partial(KERAS_DIVERGENCES[name], temperature=temperature)
    value, grads = _grads(chunked, h_s, w_s, b_s)
    full_value, full_grads = _grads(
        lambda h, w, b: _unchunked(per_token, h, w, b, h_t, w_t, b_t, m), h_s, w_s, b_s
    )
    expected = _numpy_loss(name, h_s, w_s, b_s, h_t, w_t, b_t, mask, temperature)
    np.testing.assert_allclose(value, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(value, full_value, rtol=2e-5, atol=1e-6)
    for grad, full_grad in zip(grads, full_grads):
        np.testing.assert_allclose(grad, full_grad, rtol=1e-4, atol=2e-6)
    assert np.all(grads[0][to_numpy(m) == 0] == 0)  # masked tokens get no gradient


def test_a_callable_divergence_and_no_bias():
    h_s, w_s, _, h_t, w_t, _, _, _ = _inputs(1)
    jsd = functools.partial(kd_ops.jensen_shannon_divergence, beta=0.1)
    h_t, w_t = ops.convert_to_tensor(h_t), ops.convert_to_tensor(w_t)

    def chunked(h, w):
        return kd_ops.chunked_distillation_loss(h, w, h_t, w_t, jsd, chunk_size=4)

    def full(h, w):
        return ops.mean(jsd(ops.matmul(h_t, w_t), ops.matmul(h, w)))

    value, grads = _grads(chunked, h_s, w_s)
    full_value, full_grads = _grads(full, h_s, w_s)
    expected = np.mean(
        reference.jsd_per_sample(
            (reference.f64(h_t) @ reference.f64(w_t)).reshape(-1, VOCAB),
            (reference.f64(h_s) @ reference.f64(w_s)).reshape(-1, VOCAB),
            beta=0.1,
        )
    )
    np.testing.assert_allclose(value, expected, rtol=2e-5)
    np.testing.assert_allclose(value, full_value, rtol=2e-5)
    for grad, full_grad in zip(grads, full_grads):
        np.testing.assert_allclose(grad, full_grad, rtol=1e-4, atol=2e-6)


def test_cross_entropy_in_the_same_pass():
    h_s, w_s, b_s, h_t, w_t, b_t, mask, labels = _inputs(2)
    labels = np.where(mask > 0, labels, -100)  # ignored at masked tokens
    h_t, w_t, b_t, m = (ops.convert_to_tensor(a) for a in (h_t, w_t, b_t, mask))
    y = ops.convert_to_tensor(labels)
    a, b = 0.3, 0.7

    def chunked(h, w, bias):
        total, _, _ = kd_ops.chunked_distillation_and_cross_entropy(
            h, w, h_t, w_t, labels=y, mask=m, chunk_size=3, temperature=2.0, student_bias=bias,
            teacher_bias=b_t, distillation_weight=b, cross_entropy_weight=a,
        )  # fmt: skip
        return total

    def full(h, w, bias):
        s = ops.matmul(h, w) + bias
        t = ops.matmul(h_t, w_t) + b_t
        kd = kd_ops.kl_divergence_distillation(t, s, temperature=2.0)
        safe = ops.where(y < 0, 0, y)
        ce = ops.logsumexp(s, axis=-1) - ops.squeeze(
            ops.take_along_axis(s, ops.expand_dims(safe, -1), axis=-1), -1
        )
        return ops.sum(m * (b * kd + a * ce)) / ops.sum(m)

    _, kd, ce = kd_ops.chunked_distillation_and_cross_entropy(
        h_s, w_s, h_t, w_t, labels=y, mask=m, chunk_size=3, temperature=2.0,
        student_bias=b_s, teacher_bias=b_t, distillation_weight=b, cross_entropy_weight=a,
    )  # fmt: skip
    f = reference.f64
    s = (f(h_s) @ f(w_s) + f(b_s)).reshape(-1, VOCAB)
    t = (f(to_numpy(h_t)) @ f(to_numpy(w_t)) + f(to_numpy(b_t))).reshape(-1, VOCAB)
    weights, ids = f(mask).reshape(-1), labels.reshape(-1)
    kept = weights > 0
    nll = -reference.log_softmax(s)[np.arange(len(ids)), np.where(kept, ids, 0)]
    expected_ce = np.sum(weights * nll) / np.sum(weights)
    expected_kd = np.sum(weights * reference.kd_per_sample(t, s, 2.0)) / np.sum(weights)
    np.testing.assert_allclose(float(to_numpy(ce)), expected_ce, rtol=2e-5)
    np.testing.assert_allclose(float(to_numpy(kd)), expected_kd, rtol=2e-5)

    value, grads = _grads(chunked, h_s, w_s, b_s)
    full_value, full_grads = _grads(full, h_s, w_s, b_s)
    np.testing.assert_allclose(value, b * expected_kd + a * expected_ce, rtol=2e-5)
    np.testing.assert_allclose(value, full_value, rtol=2e-5)
    for grad, full_grad in zip(grads, full_grads):
        np.testing.assert_allclose(grad, full_grad, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("chunk_size", [1, 1000])
def test_any_chunk_size_gives_the_same_value(chunk_size):
    h_s, w_s, _, h_t, w_t, _, mask, _ = _inputs(3)
    value = kd_ops.chunked_distillation_loss(h_s, w_s, h_t, w_t, mask=mask, chunk_size=chunk_size)
    expected = _numpy_loss("kl", h_s, w_s, 0.0, h_t, w_t, 0.0, mask, 1.0)
    np.testing.assert_allclose(float(to_numpy(value)), expected, rtol=2e-5)


def test_an_all_zero_mask_gives_zero_and_a_zero_gradient_whatever_masked_tokens_hold():
    h_s, w_s, b_s, h_t, w_t, _, _, labels = _inputs(4)
    h_s[0, 0] = np.nan  # padding garbage never reaches a value or a gradient
    h_t[1, 2] = np.inf
    h_t, w_t = ops.convert_to_tensor(h_t), ops.convert_to_tensor(w_t)
    for mask, expect_zero in ((np.zeros(TOKENS, "float32"), True), (None, False)):
        if mask is None:
            mask = np.ones(TOKENS, "float32")
            mask[0, 0] = mask[1, 2] = 0.0
        m = ops.convert_to_tensor(mask)

        def chunked(h, w, b, m=m):
            total, _, _ = kd_ops.chunked_distillation_and_cross_entropy(
                h, w, h_t, w_t, labels=labels, mask=m, chunk_size=4, student_bias=b
            )
            return total

        value, grads = _grads(chunked, h_s, w_s, b_s)
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
        if expect_zero:
            assert value == 0.0
            assert all(np.all(g == 0) for g in grads)
        else:
            assert value > 0.0
            assert np.all(grads[0][0, 0] == 0)


def test_inside_a_compiled_step():
    h_s, w_s, _, h_t, w_t, _, mask, _ = _inputs(5)
    expected = _numpy_loss("reverse_kl", h_s, w_s, 0.0, h_t, w_t, 0.0, mask, 1.0)

    def loss(h, w, ht, wt, m):
        return kd_ops.chunked_distillation_loss(h, w, ht, wt, "reverse_kl", mask=m, chunk_size=3)

    if BACKEND == "jax":
        import jax

        compiled = jax.jit(loss)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(loss, jit_compile=True)
    else:
        compiled = loss
    value = compiled(*(ops.convert_to_tensor(a) for a in (h_s, w_s, h_t, w_t, mask)))
    np.testing.assert_allclose(float(to_numpy(value)), expected, rtol=2e-5)


def test_refuses_bad_arguments():
    h_s, w_s, _, h_t, w_t, _, _, _ = _inputs()
    with pytest.raises(ValueError, match="chunk_size"):
        kd_ops.chunked_distillation_loss(h_s, w_s, h_t, w_t, chunk_size=0)
    with pytest.raises(ValueError, match="Unknown divergence"):
        kd_ops.chunked_distillation_loss(h_s, w_s, h_t, w_t, "cskd")
    with pytest.raises(ValueError, match="vocabularies differ"):
        kd_ops.chunked_distillation_loss(h_s, w_s, h_t, w_t[:, :5])
    with pytest.raises(ValueError, match="does not match its hidden size"):
        kd_ops.chunked_distillation_loss(h_s, w_s.T, h_t, w_t)
    with pytest.raises(ValueError, match="different tokens"):
        kd_ops.chunked_distillation_loss(h_s, w_s, h_t[:1], w_t)
    assert keras.backend.backend() == BACKEND


def test_loss_object_with_dense_heads_equals_the_function_and_round_trips():
    h_s, w_s, b_s, h_t, w_t, b_t, mask, labels = _inputs(6)
    student_head, teacher_head = keras.layers.Dense(VOCAB), keras.layers.Dense(VOCAB)
    student_head.build((None, D_S))
    teacher_head.build((None, D_T))
    student_head.set_weights([w_s, b_s])
    teacher_head.set_weights([w_t, b_t])
    loss = losses.ChunkedTokenDistillation("kl", temperature=2.0, chunk_size=4)
    value = _compiled(lambda h, g: loss(h, student_head, g, teacher_head, mask=mask))(h_s, h_t)
    expected = _numpy_loss("kl", h_s, w_s, b_s, h_t, w_t, b_t, mask, 2.0)
    np.testing.assert_allclose(float(to_numpy(value)), expected, rtol=2e-5)
    total, kd, ce = _compiled(
        lambda h, g: loss.compute(h, student_head, g, teacher_head, mask=mask, labels=labels)
    )(h_s, h_t)
    assert float(to_numpy(total)) == pytest.approx(float(to_numpy(kd + ce)), rel=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, losses.ChunkedTokenDistillation)
    assert again.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="Unknown divergence"):
        losses.ChunkedTokenDistillation("dkd")
    with pytest.raises(ValueError, match="activation"):
        losses.output_head(keras.layers.Dense(3, activation="softmax"))


def test_keras_hub_causal_lm_head_gives_its_logits():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=6, dropout=0.0,
    )  # fmt: skip
    student = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    teacher_head = keras.layers.Dense(VOCAB)  # a teacher with an untied Dense head
    teacher_head.build((None, D_T))
    rng = np.random.default_rng(7)
    x = {
        "token_ids": rng.integers(0, VOCAB, (2, 6)).astype("int32"),
        "padding_mask": np.array([[1] * 6, [1] * 4 + [0] * 2], "int32"),
    }
    hidden_s = student.backbone(x)
    hidden_t = rng.normal(size=(2, 6, D_T)).astype("float32")
    loss = losses.ChunkedTokenDistillation("jsd", chunk_size=5)
    value = loss(hidden_s, student, hidden_t, teacher_head, mask=x["padding_mask"])
    kernel, bias = losses.output_head(student)  # the tied embeddings, transposed
    assert bias is None and tuple(kernel.shape) == (8, VOCAB)
    s = to_numpy(student.backbone.token_embedding(hidden_s, reverse=True))
    np.testing.assert_allclose(to_numpy(ops.matmul(hidden_s, kernel)), s, rtol=1e-5, atol=1e-5)
    t = to_numpy(teacher_head(hidden_t))
    kept = x["padding_mask"].reshape(-1) > 0
    expected = np.mean(
        reference.jsd_per_sample(t.reshape(-1, VOCAB)[kept], s.reshape(-1, VOCAB)[kept])
    )
    np.testing.assert_allclose(float(to_numpy(value)), expected, rtol=1e-4)


@pytest.mark.parametrize("chunk_size, scale", [(3, 1.0), (4, 40.0)])
def test_chunked_cskd_equals_cskd(chunk_size, scale):
    """Against float64 NumPy and the unchunked CSKD (gradients); `scale`
    40 makes most probabilities underflow when squared (columns rescaled
    from their logs)."""
    h_s, w_s, b_s, h_t, w_t, b_t, mask, _ = _inputs(8)
    w_s, w_t = w_s * scale, w_t * scale
    h_t, w_t, b_t, m = (ops.convert_to_tensor(a) for a in (h_t, w_t, b_t, mask))

    def chunked(h, w, b):
        return kd_ops.chunked_cosine_similarity_distillation(
            h, w, h_t, w_t, mask=m, chunk_size=chunk_size, temperature=2.0, student_bias=b,
            teacher_bias=b_t,
        )  # fmt: skip

    def full(h, w, b):
        s = ops.matmul(h, w) + b
        t = ops.matmul(h_t, w_t) + b_t
        return kd_ops.cosine_similarity_distillation(t, s, temperature=2.0, mask=m)

    value, grads = _grads(chunked, h_s, w_s, b_s)
    full_value, full_grads = _grads(full, h_s, w_s, b_s)
    f = reference.f64
    s = (f(h_s) @ f(w_s) + f(b_s)).reshape(-1, VOCAB)
    t = (f(to_numpy(h_t)) @ f(to_numpy(w_t)) + f(to_numpy(b_t))).reshape(-1, VOCAB)
    expected = reference.cskd_loss(t, s, 2.0, sample_weight=mask.reshape(-1))
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(value, full_value, rtol=1e-4, atol=1e-6)
    for grad, full_grad in zip(grads, full_grads):
        if scale == 1.0:
            np.testing.assert_allclose(grad, full_grad, rtol=1e-4, atol=2e-6)
        else:
            # Logits of +-100: the float32 log-probabilities carry ~1e-5
            # relative rounding, amplified in the gradient; measured, in norm
            # against float64 finite differences, 4e-5 (hidden states) and
            # 3e-4 (kernel), the unchunked CSKD 1e-5 and 4e-5.
            error = np.linalg.norm(grad - full_grad) / np.linalg.norm(full_grad)
            assert error < 1e-3, error


def test_chunked_cskd_with_fewer_than_two_tokens_is_zero_with_a_zero_gradient():
    h_s, w_s, _, h_t, w_t, _, _, _ = _inputs(9)
    h_t, w_t = ops.convert_to_tensor(h_t), ops.convert_to_tensor(w_t)
    for kept in (0, 1):
        mask = np.zeros(TOKENS, "float32")
        mask[0, :kept] = 1.0
        m = ops.convert_to_tensor(mask)

        def chunked(h, w, m=m):
            return kd_ops.chunked_cosine_similarity_distillation(h, w, h_t, w_t, mask=m)

        value, grads = _grads(chunked, h_s, w_s)
        assert value == 0.0 and all(np.all(g == 0) for g in grads)
    with pytest.raises(ValueError, match="temperature"):
        kd_ops.chunked_cosine_similarity_distillation(h_s, w_s, h_t, w_t, temperature=np.ones(3))


def test_loss_object_cskd_with_cross_entropy():
    h_s, w_s, b_s, h_t, w_t, b_t, mask, labels = _inputs(10)
    loss = losses.ChunkedTokenDistillation("cskd", temperature=4.0, chunk_size=5)
    total, cskd, ce = _compiled(
        lambda h, g: loss.compute(
            h, (w_s, b_s), g, (w_t, b_t), mask=mask, labels=labels, distillation_weight=0.5,
            cross_entropy_weight=2.0,
        )
    )(h_s, h_t)  # fmt: skip
    f = reference.f64
    s = (f(h_s) @ f(w_s) + f(b_s)).reshape(-1, VOCAB)
    t = (f(h_t) @ f(w_t) + f(b_t)).reshape(-1, VOCAB)
    weights = f(mask).reshape(-1)
    expected_cskd = reference.cskd_loss(t, s, 4.0, sample_weight=weights)
    nll = -reference.log_softmax(s)[np.arange(len(weights)), labels.reshape(-1)]
    expected_ce = np.sum(weights * nll) / np.sum(weights)
    np.testing.assert_allclose(float(to_numpy(cskd)), expected_cskd, rtol=1e-4)
    np.testing.assert_allclose(float(to_numpy(ce)), expected_ce, rtol=2e-5)
    np.testing.assert_allclose(
        float(to_numpy(total)), 0.5 * expected_cskd + 2.0 * expected_ce, rtol=1e-4
    )


class _ChunkedHeadModel(keras.Model):
    """A student body whose loss is computed from its hidden states and head,
    chunked, in `compute_loss` (how a `Distiller` would use it)."""

    def __init__(self):
        super().__init__(name="chunked_head_model")
        self.body = keras.layers.Dense(D_S, activation="tanh")
        self.head = keras.layers.Dense(VOCAB)
        self.teacher_body = keras.layers.Dense(D_T, activation="tanh", trainable=False)
        self.teacher_head = keras.layers.Dense(VOCAB, trainable=False)
        self.chunked = losses.ChunkedTokenDistillation("kl", chunk_size=5)

    def build(self, input_shape):
        self.body.build(input_shape)
        self.head.build((None, D_S))
        self.teacher_body.build(input_shape)
        self.teacher_head.build((None, D_T))

    def call(self, x, training=False):
        return self.body(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher_hidden = ops.stop_gradient(self.teacher_body(x))
        total, _, _ = self.chunked.compute(
            y_pred, self.head, teacher_hidden, self.teacher_head, labels=y, mask=sample_weight
        )
        return total


def test_fit_trains_the_student_head_through_a_chunked_loss():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(4, *TOKENS[1:], 3)).astype("float32")
    y = rng.integers(0, VOCAB, (4, *TOKENS[1:]))
    weights = np.ones((4, *TOKENS[1:]), "float32")
    weights[:, -2:] = 0.0
    model = _ChunkedHeadModel()
    model.build((None, *TOKENS[1:], 3))
    teacher_before = [to_numpy(v) for v in model.teacher_head.weights]
    head_before = to_numpy(model.head.kernel)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(x, y, sample_weight=weights, batch_size=4, epochs=8, verbose=0)
    losses_seen = history.history["loss"]
    assert losses_seen[-1] < losses_seen[0] and np.all(np.isfinite(losses_seen))
    assert not np.allclose(to_numpy(model.head.kernel), head_before)
    for before, after in zip(teacher_before, model.teacher_head.weights):
        np.testing.assert_array_equal(to_numpy(after), before)
