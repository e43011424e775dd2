"""Independent float64 NumPy reference of every keras-cskd method.

Written from the formulas of docs `methods.md` and the papers (Hinton et al.
2015; Kim et al. 2021; Ham et al. 2023 (CSKD/CSWT); Zhao et al. 2021 (STKD);
Huang et al. 2022 (DIST); Zhao et al. 2022 (DKD)), deliberately in a plain,
loop-heavy style and *not* by porting `keras_cskd` code, so that the test
suite compares two implementations that could only agree by being right.

Conventions (as in `methods.md`):

- `t`, `s`: teacher and student logits, `(B, C)`; softmax over classes.
- Per-sample losses (KD, MSE, DKD) are reduced like Keras'
  `"sum_over_batch_size"`: `sum_i w_i l_i / B` (plain mean without weights).
- Batch-wise cosines (CSKD) use weighted inner products over the batch,
  `<a, b>_w = sum_i w_i a_i b_i`, so a sample of weight 0 is ignored.
- DIST with weights: weighted mean of the row terms (`sum w l / sum w`) and
  weighted Pearson correlation of the columns (weighted centring and inner
  products); both are invariant to rescaling the weights, like CSKD.
"""

import math

import numpy as np

SPREAD_EPSILON = 1e-6  # CSWT: similarities spanning <= this -> midpoint
CONSTANT_RTOL = 1e-6  # Pearson: a vector varying less than this (relative) is constant
CLASS_LEVELS = 9  # per-class CSWT: temperatures rounded to 9 values in [low, high]


def f64(x):
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------
# Building blocks.


def logsumexp(v):
    """log(sum(exp(v))) of a 1-D vector, shifted by its max."""
    v = f64(v)
    top = np.max(v)
    return top + math.log(float(np.sum(np.exp(v - top))))


def log_softmax_row(v):
    v = f64(v)
    return v - logsumexp(v)


def log_softmax(z, temperature=1.0):
    """Row-wise log-softmax of `z / temperature`; `temperature` is a number
    or an array broadcasting against `z` ((B, 1) per sample). Finite for
    finite logits, where the probabilities themselves may underflow."""
    z = f64(z) / f64(temperature)
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        out[i] = log_softmax_row(z[i])
    return out


def softmax(z, temperature=1.0):
    """Row-wise softmax of `z / temperature`; `temperature` is a number or an
    array broadcasting against `z` ((B, 1) per sample, (1, C) per class)."""
    return np.exp(log_softmax(z, temperature))


def scaled_from_logs(log_values):
    """`exp(log_values)` divided by its largest entry, from the logs: the
    same direction as the (possibly underflowing) values themselves."""
    log_values = f64(log_values)
    return np.exp(log_values - np.max(log_values))


def cosine(a, b, weights=None):
    """|<a, b>_w| / (||a||_w ||b||_w) of two 1-D vectors (0 if one is zero).

    No epsilon: the cosine is scale-invariant, and keras-cskd computes it
    so (an absolute epsilon is wrong when the norms are small, e.g. columns
    of probabilities ~1/C at a large class count)."""
    a, b = f64(a), f64(b)
    w = np.ones_like(a) if weights is None else f64(weights)
    dot = float(np.sum(w * a * b))
    norm_a = math.sqrt(float(np.sum(w * a * a)))
    norm_b = math.sqrt(float(np.sum(w * b * b)))
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return abs(dot) / (norm_a * norm_b)


def pearson(a, b, weights=None):
    """(Weighted) Pearson correlation of two 1-D vectors; 0 when either is
    constant (varies by at most 1e-6 of its largest entry), as in DIST's
    code, where the centred vector is zero."""
    a, b = f64(a), f64(b)
    w = np.ones_like(a) if weights is None else f64(weights)
    total = float(np.sum(w))
    centred_a = a - float(np.sum(w * a)) / total
    centred_b = b - float(np.sum(w * b)) / total
    for centred, original in ((centred_a, a), (centred_b, b)):
        kept = w > 0
        spread = float(np.max(np.abs(centred[kept] * np.sqrt(w[kept]))))
        if spread <= CONSTANT_RTOL * float(np.max(np.abs(original[kept] * np.sqrt(w[kept])))):
            return 0.0
    # Each divided by its largest entry (the correlation does not change)
    # so that tiny columns' squares do not underflow, even in float64.
    centred_a = centred_a / np.max(np.abs(centred_a))
    centred_b = centred_b / np.max(np.abs(centred_b))
    dot = float(np.sum(w * centred_a * centred_b))
    norm_a = math.sqrt(float(np.sum(w * centred_a * centred_a)))
    norm_b = math.sqrt(float(np.sum(w * centred_b * centred_b)))
    return dot / (norm_a * norm_b)


def batch_reduce(per_sample, sample_weight=None):
    """Keras "sum_over_batch_size": sum(w * l) / B."""
    per_sample = f64(per_sample)
    if sample_weight is None:
        return float(np.mean(per_sample))
    return float(np.sum(f64(sample_weight).reshape(-1) * per_sample)) / len(per_sample)


# ----------------------------------------------------------------------------
# 1. KL knowledge distillation.


def kd_per_sample(t, s, temperature=4.0):
    t, s = f64(t), f64(s)
    out = np.empty(t.shape[0])
    for i in range(t.shape[0]):
        log_pt = log_softmax_row(t[i] / temperature)
        log_ps = log_softmax_row(s[i] / temperature)
        out[i] = temperature**2 * float(np.sum(np.exp(log_pt) * (log_pt - log_ps)))
    return out


def kd_loss(t, s, temperature=4.0, sample_weight=None):
    return batch_reduce(kd_per_sample(t, s, temperature), sample_weight)


# ----------------------------------------------------------------------------
# 2. Logit MSE.


def mse_per_sample(t, s):
    t, s = f64(t), f64(s)
    return np.array([float(np.mean((s[i] - t[i]) ** 2)) for i in range(t.shape[0])])


def mse_loss(t, s, sample_weight=None):
    return batch_reduce(mse_per_sample(t, s), sample_weight)


# ----------------------------------------------------------------------------
# 3. CSKD.


def class_cosines(p_t, p_s, sample_weight=None):
    """cos_c of every class column across the batch, shape (C,)."""
    p_t, p_s = f64(p_t), f64(p_s)
    w = None if sample_weight is None else f64(sample_weight).reshape(-1)
    return np.array([cosine(p_s[:, c], p_t[:, c], w) for c in range(p_t.shape[1])])


def class_cosines_from_logs(log_p_t, log_p_s, sample_weight=None):
    """`class_cosines` of exp(log p), each column rescaled from its logs
    first (over the samples of positive weight), so that columns whose
    probabilities underflow even in float64 keep their direction."""
    log_p_t, log_p_s = f64(log_p_t), f64(log_p_s)
    batch, classes = log_p_t.shape
    w = np.ones(batch) if sample_weight is None else f64(sample_weight).reshape(-1)
    kept = w > 0
    cos = np.zeros(classes)
    if not kept.any():
        return cos
    for c in range(classes):
        a = scaled_from_logs(log_p_s[kept, c])
        b = scaled_from_logs(log_p_t[kept, c])
        cos[c] = cosine(a, b, w[kept])
    return cos


def sample_cosines(p_t, p_s):
    """Cosine of every sample's row, shape (B,)."""
    p_t, p_s = f64(p_t), f64(p_s)
    return np.array([cosine(p_s[i], p_t[i]) for i in range(p_t.shape[0])])


def sample_cosines_from_logs(log_p_t, log_p_s):
    """`sample_cosines` of exp(log p), each row rescaled from its logs."""
    return np.array(
        [
            cosine(scaled_from_logs(log_p_s[i]), scaled_from_logs(log_p_t[i]))
            for i in range(f64(log_p_t).shape[0])
        ]
    )


def per_class_log_softmax(z, class_temperatures):
    """Column c of log softmax(z / T_c) over all classes, for every c:
    (B, C). Each column comes from one softmax at one temperature (the
    classes' ranking in it is the logits')."""
    z = f64(z)
    out = np.empty_like(z)
    for c, temperature in enumerate(f64(class_temperatures).reshape(-1)):
        out[:, c] = log_softmax(z, temperature)[:, c]
    return out


def cskd_loss(t, s, temperature=4.0, sample_weight=None):
    """`mean(T)^2 * (1 - mean_c cos_c)` with `p = softmax(z / T)`; `T` a
    number, a (B, 1) array of temperatures, or a (1, C) array (class c's
    column from softmax(z / T_c)). Fewer than two samples of positive
    weight: 0 (the loss compares samples)."""
    temperature = f64(temperature)
    batch = f64(t).shape[0]
    weight = np.ones(batch) if sample_weight is None else f64(sample_weight).reshape(-1)
    if np.count_nonzero(weight > 0) < 2:
        return 0.0
    cos = cskd_cosines(t, s, temperature, sample_weight)
    if temperature.ndim == 2 and temperature.shape[1] == 1 and temperature.shape[0] == batch:
        mean = float(np.mean(temperature[weight > 0]))  # over the samples that count
    else:
        mean = float(np.mean(temperature))
    return mean**2 * (1.0 - float(np.mean(cos)))


def cskd_cosines(t, s, temperature=4.0, sample_weight=None):
    """CSKD's class cosines at `temperature` (a number, (B, 1) or (1, C)
    per class: class c's column from softmax(z / T_c)), shape (C,)."""
    temperature = f64(temperature)
    if temperature.ndim == 2 and temperature.shape[0] == 1 and temperature.shape[1] > 1:
        log_p_t = per_class_log_softmax(t, temperature)
        log_p_s = per_class_log_softmax(s, temperature)
    else:
        log_p_t, log_p_s = log_softmax(t, temperature), log_softmax(s, temperature)
    return class_cosines_from_logs(log_p_t, log_p_s, sample_weight)


# ----------------------------------------------------------------------------
# 4. CSWT.


def min_max_map(similarity, low, high, spread_epsilon=SPREAD_EPSILON):
    sim = f64(similarity)
    smallest, largest = float(np.min(sim)), float(np.max(sim))
    if largest - smallest <= spread_epsilon:
        return np.full_like(sim, (low + high) / 2.0)
    return low + (largest - sim) / (largest - smallest) * (high - low)


def class_map(similarity, low, high, levels=CLASS_LEVELS):
    """Per-class CSWT: `low + (1 - cos_c) (high - low)`, rounded to the
    nearest of `levels` evenly spaced values of [low, high]."""
    raw = low + (1.0 - np.clip(f64(similarity), 0.0, 1.0)) * (high - low)
    grid = np.linspace(low, high, levels)
    return np.array([grid[int(np.argmin(np.abs(grid - value)))] for value in raw])


def cswt_similarities(t, s, granularity="sample"):
    """The CSWT similarities at temperature 1 (rows or columns)."""
    log_p_t, log_p_s = log_softmax(t), log_softmax(s)
    if granularity == "sample":
        return sample_cosines_from_logs(log_p_t, log_p_s)
    if granularity == "class":
        return class_cosines_from_logs(log_p_t, log_p_s)
    raise ValueError(granularity)


def cswt_temperatures(t, s, low=2.0, high=6.0, granularity="sample"):
    """(B, 1) per sample (the authors' min-max map) or (1, C) per class."""
    similarity = cswt_similarities(t, s, granularity)
    if granularity == "sample":
        return min_max_map(similarity, low, high).reshape((-1, 1))
    return class_map(similarity, low, high).reshape((1, -1))


def cskd_cswt_loss(t, s, low=2.0, high=6.0, granularity="sample", sample_weight=None):
    """CSKD with CSWT temperatures taken over the samples of positive weight
    only (a sample of weight 0 takes no part in the similarities, the min or
    the max; per sample it gets the midpoint, which no term reads)."""
    t, s = f64(t), f64(s)
    if sample_weight is None:
        temps = cswt_temperatures(t, s, low, high, granularity)
        return cskd_loss(t, s, temps, sample_weight)
    kept = f64(sample_weight).reshape(-1) > 0
    part = cswt_temperatures(t[kept], s[kept], low, high, granularity)
    if granularity == "sample":
        temps = np.full((len(t), 1), (low + high) / 2.0)
        temps[kept] = part
    else:
        temps = part
    return cskd_loss(t, s, temps, sample_weight)


# ----------------------------------------------------------------------------
# 5. STKD-style.


def stkd_loss(t, s, temperature=4.0, kl_weight=1.0, batch_weight=1.0, sample_weight=None):
    return kl_weight * kd_loss(t, s, temperature, sample_weight) + batch_weight * cskd_loss(
        t, s, temperature, sample_weight
    )


# ----------------------------------------------------------------------------
# 6a. DIST.


def dist_loss(t, s, temperature=4.0, inter_weight=1.0, intra_weight=1.0, sample_weight=None):
    """DIST; fewer than two samples of positive weight: 0 (it compares
    samples)."""
    weight = np.ones(f64(t).shape[0]) if sample_weight is None else f64(sample_weight).reshape(-1)
    if np.count_nonzero(weight > 0) < 2:
        return 0.0
    log_p_t, log_p_s = log_softmax(t, temperature), log_softmax(s, temperature)
    p_t, p_s = np.exp(log_p_t), np.exp(log_p_s)
    batch, classes = p_t.shape
    inter_terms = np.array([1.0 - pearson(p_s[i], p_t[i]) for i in range(batch)])
    w = np.ones(batch) if sample_weight is None else f64(sample_weight).reshape(-1)
    inter = float(np.sum(w * inter_terms)) / float(np.sum(w))
    # Columns from their logs (Pearson is scale-invariant): exact where the
    # probabilities underflow, over the samples of positive weight.
    kept = w > 0
    intra = float(
        np.mean(
            [
                1.0
                - pearson(
                    scaled_from_logs(log_p_s[kept, c]), scaled_from_logs(log_p_t[kept, c]), w[kept]
                )
                for c in range(classes)
            ]
        )
    )
    return temperature**2 * (inter_weight * inter + intra_weight * intra)


# ----------------------------------------------------------------------------
# 6b. DKD.


def labels_to_ids(labels, classes):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == classes:
        return np.argmax(labels, axis=1)
    return labels.reshape(-1).astype(int)


def dkd_per_sample(t, s, labels, temperature=4.0, alpha=1.0, beta=8.0):
    """alpha * TCKD + beta * NCKD per sample, each tau^2-scaled.

    TCKD: KL of the binary distributions (p_target, 1 - p_target).
    NCKD: KL of the distributions renormalised over the non-target classes.
    """
    t, s = f64(t) / temperature, f64(s) / temperature
    ids = labels_to_ids(labels, t.shape[1])
    out = np.empty(t.shape[0])
    for i in range(t.shape[0]):
        y = ids[i]
        t_rest, s_rest = np.delete(t[i], y), np.delete(s[i], y)
        lse_t, lse_s = logsumexp(t[i]), logsumexp(s[i])
        log_bt = np.array([t[i][y] - lse_t, logsumexp(t_rest) - lse_t])
        log_bs = np.array([s[i][y] - lse_s, logsumexp(s_rest) - lse_s])
        tckd = float(np.sum(np.exp(log_bt) * (log_bt - log_bs)))
        log_qt, log_qs = log_softmax_row(t_rest), log_softmax_row(s_rest)
        nckd = float(np.sum(np.exp(log_qt) * (log_qt - log_qs)))
        out[i] = temperature**2 * (alpha * tckd + beta * nckd)
    return out


def dkd_loss(t, s, labels, temperature=4.0, alpha=1.0, beta=8.0, sample_weight=None):
    return batch_reduce(dkd_per_sample(t, s, labels, temperature, alpha, beta), sample_weight)


# ----------------------------------------------------------------------------
# 7. The divergences of language-model distillation (per position, tau^2-scaled).


def _kl_rows(log_p, log_q):
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def reverse_kl_per_sample(t, s, temperature=1.0):
    log_pt, log_ps = log_softmax(t, temperature), log_softmax(s, temperature)
    return temperature**2 * _kl_rows(log_ps, log_pt)


def jsd_per_sample(t, s, beta=0.5, temperature=1.0):
    """TRL's generalized JSD: m = beta p_t + (1 - beta) p_s; beta KL(p_t||m) +
    (1 - beta) KL(p_s||m); beta = 0 forward KL, beta = 1 reverse KL."""
    log_pt, log_ps = log_softmax(t, temperature), log_softmax(s, temperature)
    if beta == 0.0:
        return temperature**2 * _kl_rows(log_pt, log_ps)
    if beta == 1.0:
        return temperature**2 * _kl_rows(log_ps, log_pt)
    # The mixture from the logs: exact where the probabilities underflow.
    log_m = np.logaddexp(np.log(beta) + log_pt, np.log1p(-beta) + log_ps)
    return temperature**2 * (beta * _kl_rows(log_pt, log_m) + (1 - beta) * _kl_rows(log_ps, log_m))


def skew_kl_per_sample(t, s, alpha=0.1, temperature=1.0, reverse=False):
    log_pt, log_ps = log_softmax(t, temperature), log_softmax(s, temperature)
    if reverse:
        log_pt, log_ps = log_ps, log_pt
    log_m = np.logaddexp(np.log(alpha) + log_pt, np.log1p(-alpha) + log_ps)
    return temperature**2 * _kl_rows(log_pt, log_m)


def tv_per_sample(t, s, temperature=1.0):
    p_t, p_s = softmax(t, temperature), softmax(s, temperature)
    return temperature**2 * 0.5 * np.sum(np.abs(p_t - p_s), axis=-1)


# ----------------------------------------------------------------------------
# Finite differences.


def finite_difference(fn, x, step=1e-6):
    """Central finite-difference gradient of a scalar `fn` at `x` (float64)."""
    x = f64(x).copy()
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + step
        up = fn(x)
        x[index] = original - step
        down = fn(x)
        x[index] = original
        grad[index] = (up - down) / (2.0 * step)
    return grad


# ----------------------------------------------------------------------------
# Positions: logits (B, ..., C), every leading axis a position.


def kept_positions(t, s, labels=None, sample_weight=None, mask=None):
    """The (N, C) rows of per-position logits that a mask keeps, in
    row-major order of the leading axes, with the labels and weights of
    those positions: every loss on positions is defined as the loss of
    these rows (the masked ones are simply absent).

    `labels` hold one class id per position (the leading shape);
    `sample_weight` one weight per sample (B,) or per position; `mask` the
    leading shape, truthy where the position counts. Returns
    `(t_rows, s_rows, label_rows, weight_rows)`, None where not given.
    """
    t, s = f64(t), f64(s)
    leading = t.shape[:-1]
    keep = np.ones(leading, bool) if mask is None else np.asarray(mask).astype(bool)
    weights = None
    if sample_weight is not None:
        w = f64(sample_weight)
        weights = np.empty(leading)
        for index in np.ndindex(leading):
            weights[index] = w[index[0]] if w.ndim == 1 else w[index]
    rows_t, rows_s, rows_y, rows_w = [], [], [], []
    for index in np.ndindex(leading):
        if not keep[index]:
            continue
        rows_t.append(t[index])
        rows_s.append(s[index])
        if labels is not None:
            rows_y.append(np.asarray(labels)[index])
        if weights is not None:
            rows_w.append(weights[index])
    return (
        np.array(rows_t),
        np.array(rows_s),
        None if labels is None else np.array(rows_y),
        None if weights is None else np.array(rows_w),
    )
