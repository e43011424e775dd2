"""Masks and sample weights have one semantics for every loss and in the
Distiller: values >= 0 (0 drops a position, a positive value weighs it),
anything else refused; an empty selection contributes 0 with a zero
gradient and is not counted in the logged means; masked positions never
reach a term (the supervised loss and CSWT's temperatures included); the
label -100 of token data marks a position without a label."""

import warnings

import keras
import numpy as np
import pytest
import reference
from helpers import LOSS_CASE_IDS, LOSS_CASES, to_numpy, value_and_grad

import keras_cskd

CLASSES = 5


def _tokens(seed=0, batch=4, length=6):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(batch, length, CLASSES)).astype("float32") * 2
    s = rng.normal(size=(batch, length, CLASSES)).astype("float32") * 2
    labels = rng.integers(0, CLASSES, (batch, length))
    return t, s, labels


@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_CASE_IDS)
def test_an_empty_selection_gives_zero_and_no_gradient(case):
    t, s, labels = _tokens()
    mask = np.zeros(t.shape[:-1], "float32")
    loss = case.make()
    value, grad = value_and_grad(lambda tt, ss: case(loss, tt, ss, labels=labels, mask=mask), t, s)
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros_like(grad))


@pytest.mark.parametrize("case", [c for c in LOSS_CASES if c.batchwise], ids=lambda c: c.name)
def test_a_batchwise_term_with_one_kept_position_gives_zero(case):
    """One position has nothing to compare with: the batch-wise term is 0,
    not a degenerate value (0.1: CSKD ~0, DIST 31.45); STKD keeps its
    per-position KL term."""
    t, s, labels = _tokens()
    mask = np.zeros(t.shape[:-1], "float32")
    mask[1, 2] = 1.0
    loss = case.make()
    value = float(to_numpy(case(loss, t, s, labels=labels, mask=mask)))
    expected = 0.0
    if case.name.startswith("stkd"):
        kept_t, kept_s = t[1:2, 2].astype("float64"), s[1:2, 2].astype("float64")
        expected = loss.kl_weight * reference.kd_loss(kept_t, kept_s, loss.temperature)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf], ids=["negative", "nan", "inf"])
def test_masks_other_than_weights_are_refused(bad):
    t, s, _ = _tokens()
    mask = np.ones(t.shape[:-1], "float32")
    mask[0, 0] = bad
    with pytest.raises(ValueError, match="the mask holds"):
        keras_cskd.losses.KLDivergenceDistillation()(t, s, mask=mask)


@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_CASE_IDS)
def test_a_fractional_mask_weighs_its_position(case):
    """A mask of 0.5 keeps its position with weight 0.5: the same loss as a
    0/1 mask with sample weights of 0.5 there (0.1 read 0.5 as dropped in
    the loss but kept in its checks)."""
    t, s, labels = _tokens(seed=1)
    mask = np.ones(t.shape[:-1], "float32")
    mask[:, -2:] = 0.5
    ones = np.ones_like(mask)
    loss = case.make()
    halves = to_numpy(case(loss, t, s, labels=labels, mask=mask))
    weighted = to_numpy(case(loss, t, s, labels=labels, mask=ones, sample_weight=mask))
    np.testing.assert_allclose(halves, weighted, rtol=1e-5, atol=1e-6)


def _token_model(name, width, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), dtype="int32", name=f"{name}_tokens")
    h = keras.layers.Embedding(20, width)(inputs)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name=f"{name}_logits")(h), name=name)


def _total(distiller, x, y, sample_weight=None):
    step = distiller(x, training=True)
    return float(to_numpy(distiller.compute_loss(x, y, step, sample_weight)))


def test_ignore_label_minus_100_is_a_position_without_a_label():
    """Token data mark positions without a label with -100: the Distiller's
    loss equals the loss with those positions given weight 0 (and any label
    there), and no -100 reaches the cross-entropy."""
    teacher, student = _token_model("teacher", 16, 0), _token_model("student", 4, 1)
    distiller = keras_cskd.Distiller(student, teacher, "kd", distillation_loss_weight=1.0)
    distiller.compile(optimizer="sgd")
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, (4, 6)).astype("int32")
    y = rng.integers(0, CLASSES, (4, 6))
    ignored = y.copy()
    ignored[:, -2:] = -100
    weights = np.ones((4, 6), "float32")
    weights[:, -2:] = 0.0
    expected = _total(distiller, x, y, weights)
    got = _total(distiller, x, ignored)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The float64 reference on the labelled positions alone.
    step = distiller(x, training=True)
    t, s = to_numpy(step.teacher_logits[0]), to_numpy(step.student_logits)
    rows_t, rows_s, rows_y, _ = reference.kept_positions(t, s, y, None, weights > 0)
    log_p = rows_s - rows_s.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    cross_entropy = -np.mean(log_p[np.arange(len(rows_y)), rows_y])
    np.testing.assert_allclose(
        got, cross_entropy + reference.kd_loss(rows_t, rows_s, 4.0), rtol=1e-5
    )


def test_infinite_logits_at_padded_positions_reach_no_term():
    """+inf student logits at positions the padding mask drops: the total
    loss is finite and equals the loss with those logits zeroed (0.1: NaN,
    from Keras' masked cross-entropy)."""
    student = _token_model("student", 4, 1)
    teacher = _token_model("teacher", 16, 0)
    inputs = {"tokens": keras.Input((6,), dtype="int32"), "padding_mask": keras.Input((6,))}
    logits = student(inputs["tokens"])
    poisoned = keras.layers.Lambda(
        lambda pair: keras.ops.where(
            keras.ops.expand_dims(pair[1], -1) > 0, pair[0], keras.ops.full_like(pair[0], np.inf)
        )
    )([logits, inputs["padding_mask"]])
    wrapped_student = keras.Model(inputs, poisoned)
    wrapped_teacher = keras.Model(inputs, teacher(inputs["tokens"]))
    distiller = keras_cskd.Distiller(
        wrapped_student, wrapped_teacher, "cskd", distillation_loss_weight=1.0, check_roles=False
    )
    distiller.compile(optimizer="sgd")
    rng = np.random.default_rng(1)
    padding = np.ones((4, 6), "float32")
    padding[:, -2:] = 0
    x = {"tokens": rng.integers(1, 20, (4, 6)).astype("int32"), "padding_mask": padding}
    y = rng.integers(0, CLASSES, (4, 6))
    total = _total(distiller, x, y)
    assert np.isfinite(total)


def test_cswt_temperatures_ignore_samples_of_weight_zero():
    """A sample of weight 0 takes no part in CSWT's similarities, min or max:
    changing its logits changes nothing."""
    rng = np.random.default_rng(3)
    t = rng.normal(size=(8, 5)).astype("float32") * 3
    s = rng.normal(size=(8, 5)).astype("float32") * 3
    weights = np.ones(8, "float32")
    weights[0] = 0.0
    loss = keras_cskd.losses.get("cskd_cswt")
    before = to_numpy(loss(t, s, sample_weight=weights))
    t2, s2 = t.copy(), s.copy()
    t2[0], s2[0] = t[0] * 10, -s[0] * 10  # the worst agreement: would set the max
    after = to_numpy(loss(t2, s2, sample_weight=weights))
    np.testing.assert_allclose(after, before, rtol=1e-6)
    np.testing.assert_allclose(
        before,
        reference.cskd_cswt_loss(t.astype("float64"), s.astype("float64"), sample_weight=weights),
        rtol=1e-5,
    )


def test_an_all_padding_batch_is_left_out_of_the_logged_mean():
    """One batch whose every position is padding adds 0 and is not counted:
    the epoch's logged distillation_loss is the mean over the other batches
    (0.1 averaged it in, and CSKD logged tau^2 = 16 for it), and a warning
    says so."""
    teacher, student = _token_model("teacher", 16, 0), _token_model("student", 4, 1)
    distiller = keras_cskd.Distiller(student, teacher, "cskd", distillation_loss_weight=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))  # nothing moves: comparable steps
    rng = np.random.default_rng(2)
    x = rng.integers(1, 20, (16, 6)).astype("int32")
    y = rng.integers(0, CLASSES, (16, 6))
    weights = np.ones((16, 6), "float32")
    weights[12:] = 0.0  # the last batch of 4 is all padding
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distiller.fit(
            x, y, sample_weight=weights, batch_size=4, epochs=1, shuffle=False, verbose=0
        )
    messages = [str(w.message) for w in caught if "nothing to distil" in str(w.message)]
    assert len(messages) == 1 and "1 of its 4 training steps" in messages[0], messages
    per_batch = []
    for start in range(0, 12, 4):
        part = slice(start, start + 4)
        step = distiller(x[part], training=True)
        value, _, _ = keras_cskd.distiller.objective.distillation_term(
            distiller.terms, distiller.teachers, y[part], step, weights[part], weights[part]
        )
        per_batch.append(float(to_numpy(value)))
    np.testing.assert_allclose(
        history.history["distillation_loss"][0], np.mean(per_batch), rtol=1e-5
    )
