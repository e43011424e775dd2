"""Distributed distillation runs for `test_distributed.py`, in their own process.

Run as a script, it trains the same (teacher, student) pair twice per case
on the same global batch -- once on one device (the reference) and once
distributed -- and writes the per-step losses and final student weights of
both runs to an `.npz` file; the test compares them.

    python distributed_worker.py jax OUT.npz   # keras.distribution on 8 CPU devices
    python distributed_worker.py tf OUT.npz    # tf.distribute.MirroredStrategy, 4 CPUs

The device count must be fixed before JAX/TensorFlow start, which is why
this runs in a subprocess: `jax` mode sets
`XLA_FLAGS=--xla_force_host_platform_device_count=8` before importing JAX,
`tf` mode splits the CPU into 4 logical devices before Keras builds anything.

Nothing here runs on import (pytest's doctest collection imports it).
"""

import contextlib
import json
import os
import sys

NUM_DEVICES = {"jax": 8, "tf": 4}
GLOBAL_BATCH = 32
FEATURES = 12
CLASSES = 6
STEPS = 3  # one batch per epoch: the history holds each step's values
LOGGED = ("loss", "student_loss", "distillation_loss", "cosine_similarity", "temperature")


def _setup(mode):
    if mode == "jax":
        os.environ["KERAS_BACKEND"] = "jax"
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={NUM_DEVICES['jax']}".strip()
        )
        import jax

        assert len(jax.devices()) == NUM_DEVICES["jax"], jax.devices()
    else:
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_DEVICES["tf"]
        )


def _data():
    import numpy as np

    rng = np.random.default_rng(7)
    x = rng.standard_normal((GLOBAL_BATCH, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=(GLOBAL_BATCH,)).astype("int32")
    # Uneven weights, some zero: the weighted batch statistics must be global too.
    w = rng.choice([0.0, 0.5, 1.0, 2.0], size=(GLOBAL_BATCH,)).astype("float32")
    return x, y, w


def _build(role, hidden):
    """A small MLP with BatchNorm (its batch statistics are batch-wise too);
    layer names carry the role so a LayoutMap can target the teacher."""
    import keras

    inputs = keras.Input((FEATURES,))
    h = keras.layers.Dense(hidden, name=f"{role}_hidden")(inputs)
    # synchronized=True: under tf.distribute, Keras' BatchNormalization
    # otherwise normalises each replica's shard with its own statistics
    # (JAX's keras.distribution always uses the global batch).
    h = keras.layers.BatchNormalization(
        synchronized=keras.backend.backend() == "tensorflow", name=f"{role}_bn"
    )(h)
    h = keras.layers.ReLU()(h)
    outputs = keras.layers.Dense(CLASSES, name=f"{role}_logits")(h)
    return keras.Model(inputs, outputs, name=role)


def _initial_weights():
    import keras

    keras.utils.set_random_seed(1)
    teacher = _build("teacher", 32)
    student = _build("student", 16)
    # A teacher that is not at its initialisation: non-trivial moving stats.
    teacher.get_layer("teacher_bn").moving_mean.assign(keras.random.normal((32,), seed=2) * 0.1)
    return teacher.get_weights(), student.get_weights()


def _losses():
    from keras_cskd import losses
    from keras_cskd.layers import CosineSimilarityWeightedTemperature

    return {
        "cskd": lambda: losses.CosineSimilarityDistillation(temperature=4.0),
        "cswt_sample": losses.cskd_paper_objective,
        "cswt_class": lambda: losses.CosineSimilarityDistillation(
            cswt=CosineSimilarityWeightedTemperature(granularity="class")
        ),
        "dist": lambda: losses.DISTDistillation(temperature=4.0),
        "stkd": lambda: losses.SimilarityTransferDistillation(temperature=4.0),
        "dkd": lambda: losses.DecoupledKDDistillation(temperature=4.0),
        "kd": lambda: losses.KLDivergenceDistillation(temperature=4.0),
        # The batch-wise losses in one Distiller (one compilation per run).
        "batchwise_mix": lambda: [
            *losses.cskd_paper_objective(),
            (
                losses.CosineSimilarityDistillation(
                    cswt=CosineSimilarityWeightedTemperature(granularity="class"),
                    name="cswt_class",
                ),
                1.0,
            ),
            (losses.DISTDistillation(temperature=4.0), 1.0),
        ],
        # DKD reads the labels (gathered across tf.distribute replicas too).
        "dkd_stkd": lambda: [
            (losses.DecoupledKDDistillation(temperature=4.0), 1.0),
            (losses.SimilarityTransferDistillation(temperature=4.0), 1.0),
        ],
    }


def _train(
    scope, loss_name, weights, mixup_alpha="auto", sample_weight=False, jit="auto", evaluate=False
):
    """Builds and distils inside `scope`; returns (history, student weights,
    the Distiller)."""
    import keras
    import numpy as np

    import keras_cskd

    x, y, w = _data()
    teacher_weights, student_weights = weights
    with scope:
        teacher = _build("teacher", 32)
        student = _build("student", 16)
        teacher.set_weights(teacher_weights)
        student.set_weights(student_weights)
        distiller = keras_cskd.Distiller(
            student,
            teacher,
            _losses()[loss_name](),
            mixup_alpha=mixup_alpha,
            seed=3,
            student_loss_weight=0.5,
            distillation_loss_weight=2.0,
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.3, momentum=0.9), jit_compile=jit)
        history = distiller.fit(
            x,
            y,
            sample_weight=w if sample_weight else None,
            batch_size=GLOBAL_BATCH,
            epochs=STEPS,
            shuffle=False,
            verbose=0,
        )
        if evaluate:
            evaluation = distiller.evaluate(
                x, y, batch_size=GLOBAL_BATCH, verbose=0, return_dict=True
            )
    logs = {
        key: np.asarray(history.history[key], "float64") for key in LOGGED if key in history.history
    }
    if evaluate:
        logs["eval_student_loss"] = np.asarray([evaluation["student_loss"]], "float64")
    final = [np.asarray(v, "float64") for v in student.get_weights()]
    return logs, final, distiller


def _per_replica_gap(num_shards):
    """The CSKD loss of the global batch and the mean of the per-shard
    losses on the reference's initial logits: the test checks they differ,
    i.e. that comparing with the single-device run can tell global from
    per-replica semantics."""
    import numpy as np

    from keras_cskd import losses

    x, _, _ = _data()
    teacher_weights, student_weights = _initial_weights()
    teacher = _build("teacher", 32)
    student = _build("student", 16)
    teacher.set_weights(teacher_weights)
    student.set_weights(student_weights)
    t = np.asarray(teacher(x, training=False))
    s = np.asarray(student(x, training=False))
    loss = losses.CosineSimilarityDistillation(temperature=4.0)
    shard = GLOBAL_BATCH // num_shards
    per_shard = [
        float(loss(t[i : i + shard], s[i : i + shard])) for i in range(0, GLOBAL_BATCH, shard)
    ]
    return float(loss(t, s)), float(np.mean(per_shard))


def _sharded_loss_values(results):
    """Each batch-wise loss evaluated directly on logits sharded over the 8
    devices (`jax.jit` over global arrays) versus on one device."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    rng = np.random.default_rng(11)
    t = rng.normal(size=(GLOBAL_BATCH, CLASSES)).astype("float32") * 3
    s = rng.normal(size=(GLOBAL_BATCH, CLASSES)).astype("float32") * 3
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch", None))
    t_sharded = jax.device_put(t, sharding)
    s_sharded = jax.device_put(s, sharding)
    assert len(t_sharded.sharding.device_set) == NUM_DEVICES["jax"]
    terms = {}
    for name, make in _losses().items():
        if name in ("dkd", "batchwise_mix", "dkd_stkd"):
            continue  # dkd needs labels (per-sample anyway); the mix is its parts
        loss = make()
        # cskd_paper_objective gives (loss, weight) pairs.
        terms[name] = loss if isinstance(loss, list) else [(loss, 1.0)]

    def all_losses(a, b):
        return {
            name: sum(weight * term.compute(a, b) for term, weight in pairs)
            for name, pairs in terms.items()
        }

    def values_and_grads(a, b):
        values = all_losses(a, b)
        grads = {name: jax.grad(lambda b_, name=name: all_losses(a, b_)[name])(b) for name in terms}
        return values, grads

    compiled = jax.jit(values_and_grads)  # one program, traced once per input sharding
    single = compiled(t, s)
    sharded = compiled(t_sharded, s_sharded)
    for name in terms:
        results[f"sharded/{name}/single_value"] = np.asarray(single[0][name], "float64")
        results[f"sharded/{name}/sharded_value"] = np.asarray(sharded[0][name], "float64")
        results[f"sharded/{name}/single_grad"] = np.asarray(single[1][name], "float64")
        results[f"sharded/{name}/sharded_grad"] = np.asarray(sharded[1][name], "float64")


def _store(results, case, single, distributed):
    for tag, (logs, weights, _) in (("single", single), ("distributed", distributed)):
        for key, value in logs.items():
            results[f"{case}/{tag}/log/{key}"] = value
        for index, value in enumerate(weights):
            results[f"{case}/{tag}/weight/{index}"] = value


def run_jax(results, info):
    import jax
    import keras

    weights = _initial_weights()
    data_parallel = keras.distribution.DataParallel(devices=jax.devices())
    # Uneven sample weights weight the batch statistics (column inner
    # products, Pearson means): they must be global too.
    cases = {
        "batchwise_mix_weighted": dict(
            loss_name="batchwise_mix", sample_weight=True, evaluate=True
        ),
        "stkd_mixup": dict(loss_name="stkd"),
    }
    references = {}
    for case, kwargs in cases.items():
        single = references[case] = _train(contextlib.nullcontext(), weights=weights, **kwargs)
        distributed = _train(data_parallel.scope(), weights=weights, **kwargs)
        _store(results, case, single, distributed)
        student = distributed[2].student
        info[f"{case}/student_sharding"] = str(student.weights[0].value.sharding)
        info[f"{case}/devices"] = len(student.weights[0].value.sharding.device_set)

    # ModelParallel: the teacher's hidden layer sharded over a 'model' axis,
    # the student replicated, the batch split over a 'batch' axis.
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), jax.devices())
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["teacher_hidden/kernel"] = (None, "model")
    layout_map["teacher_hidden/bias"] = ("model",)
    layout_map["teacher_logits/kernel"] = ("model", None)
    model_parallel = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    distributed = _train(model_parallel.scope(), weights=weights, **cases["batchwise_mix_weighted"])
    _store(
        results,
        "model_parallel_batchwise_mix_weighted",
        references["batchwise_mix_weighted"],
        distributed,
    )
    teacher = distributed[2].teacher
    kernel = teacher.get_layer("teacher_hidden").kernel.value
    info["model_parallel/teacher_kernel_spec"] = str(kernel.sharding.spec)
    info["model_parallel/teacher_kernel_shard_shape"] = list(
        kernel.addressable_shards[0].data.shape
    )
    info["model_parallel/teacher_kernel_shape"] = list(kernel.shape)
    student_kernel = distributed[2].student.get_layer("student_hidden").kernel.value
    info["model_parallel/student_kernel_spec"] = str(student_kernel.sharding.spec)

    _sharded_loss_values(results)
    info["cskd_global"], info["cskd_per_replica_mean"] = _per_replica_gap(NUM_DEVICES["jax"])


def _train_language_model(scope, loss_name, chunk_size, empty_shard=False):
    """A tiny keras-hub GPT-2 pair (tests/tiny_gpt2.py) distilled for STEPS
    steps on one batch whose rows keep different numbers of tokens, so that
    each replica's shard keeps its own count; `empty_shard`: the first row
    (one replica's whole shard) keeps no token."""
    import keras
    import numpy as np
    from tiny_gpt2 import batch, lm

    import keras_cskd

    x, y, w = batch()
    if empty_shard:
        w[0] = 0.0
    with scope:
        teacher, student = lm(2, 32, 0), lm(1, 16, 1)
        distiller = keras_cskd.Distiller(
            student,
            teacher,
            _losses()[loss_name](),
            check_roles=False,
            chunk_size=chunk_size,
            student_loss_weight=0.5,
            distillation_loss_weight=2.0,
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
        history = distiller.fit(
            x, y, sample_weight=w, batch_size=len(y), epochs=STEPS, shuffle=False, verbose=0
        )
    logs = {
        key: np.asarray(history.history[key], "float64") for key in LOGGED if key in history.history
    }
    return logs, [np.asarray(v, "float64") for v in student.get_weights()], distiller


TOKENS = 2048  # per replica: thousands of positions
VOCABULARY = 512


def _token_normaliser(strategy, results):
    """The student's token cross-entropy computed in a `strategy.run` on
    four shards that keep 1, 0, 2048 and about half of their 2048 tokens,
    with fractional weights: the sum of the replicas' values (Keras' losses
    divide by the replica count under tf.distribute, and the replicas'
    gradients are summed), and the same from NumPy in float64 over the
    global batch."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_cskd.distiller import objective
    from keras_cskd.distiller.step import Step

    replicas = strategy.num_replicas_in_sync
    rng = np.random.default_rng(13)
    logits = rng.normal(size=(replicas, 1, TOKENS, VOCABULARY)) * 4.0
    labels = rng.integers(0, VOCABULARY, size=(replicas, 1, TOKENS))
    weights = np.zeros((replicas, 1, TOKENS))
    weights[0, 0, TOKENS // 2] = 1.0  # one kept token
    # weights[1]: this shard keeps none
    weights[2] = 1.0
    weights[3] = rng.choice([0.0, 0.5, 1.0, 3.0], size=(1, TOKENS))
    labels = np.where(weights > 0, labels, -100)  # what the dropped positions hold
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def shard(array, dtype):
        return strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(array[context.replica_id_in_sync_group], dtype)
        )

    def replica_loss(z, y, w):
        step = Step(student_logits=z, teacher_logits=())
        return objective.supervised_loss(loss_fn, y, step, None, w)

    per_replica = strategy.run(
        replica_loss,
        args=(shard(logits, "float32"), shard(labels, "int32"), shard(weights, "float32")),
    )
    values = [float(v) for v in strategy.experimental_local_results(per_replica)]
    results["token_normaliser/replica_values"] = np.asarray(values, "float64")
    results["token_normaliser/keras_sum"] = np.asarray(sum(values), "float64")
    # float64 reference: sum of w * CE over every kept token / kept tokens
    top = logits.max(axis=-1, keepdims=True)
    log_softmax = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_softmax, np.maximum(labels, 0)[..., None], -1)[..., 0]
    weighted = np.where(weights > 0, -weights * picked, 0.0)  # (replicas, 1, tokens)
    kept = (weights > 0).reshape(replicas, -1).sum(axis=-1)
    sums = weighted.reshape(replicas, -1).sum(axis=-1)
    results["token_normaliser/reference"] = np.asarray(sums.sum() / kept.sum(), "float64")
    # What dividing by each shard's own count gives (before 0.2): must differ.
    own = np.divide(sums, kept, out=np.zeros_like(sums), where=kept > 0)
    results["token_normaliser/per_replica_mean"] = np.asarray(own.mean(), "float64")


def run_tf(results, info):
    import tensorflow as tf

    weights = _initial_weights()
    devices = [f"/cpu:{i}" for i in range(NUM_DEVICES["tf"])]
    # jit_compile=False: XLA under MirroredStrategy on logical CPU devices
    # fails in Keras/TF for any model ("variable on a different device").
    cases = {
        "batchwise_mix_weighted": dict(
            loss_name="batchwise_mix", sample_weight=True, evaluate=True
        ),
        "dkd_stkd_no_mixup": dict(loss_name="dkd_stkd", mixup_alpha=None),
    }
    # One strategy for every case: TensorFlow's collective instance keys are
    # per strategy, and several strategies in one process can collide.
    strategy = tf.distribute.MirroredStrategy(devices)
    for case, kwargs in cases.items():
        single = _train(contextlib.nullcontext(), weights=weights, jit=False, **kwargs)
        distributed = _train(strategy.scope(), weights=weights, jit=False, **kwargs)
        _store(results, case, single, distributed)
        info[f"{case}/replicas"] = strategy.num_replicas_in_sync
    # Mixup under MirroredStrategy: runs, losses on the global batch, but the
    # mixup pairs are drawn within each replica's shard (documented).
    logs, _, _ = _train(strategy.scope(), weights=weights, jit=False, loss_name="stkd")
    results["stkd_mixup/distributed/log/loss"] = logs["loss"]
    # Language models: padded rows, so the replicas' shards keep different
    # numbers of tokens (the token means must be the global batch's), with
    # logits and chunked (chunk_size=3) steps.
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        info["language_models"] = "keras-hub not installed"
    else:
        for loss_name in ("kd", "cskd"):
            for chunk_size in (None, 3):
                case = f"lm_{loss_name}_{'chunked' if chunk_size else 'logits'}"
                single = _train_language_model(contextlib.nullcontext(), loss_name, chunk_size)
                distributed = _train_language_model(strategy.scope(), loss_name, chunk_size)
                _store(results, case, single, distributed)
                info[f"{case}/replicas"] = strategy.num_replicas_in_sync
        # One replica's shard keeps no token at all.
        for loss_name, chunk_size in (("kd", None), ("cskd", 3)):
            case = f"lm_{loss_name}_{'chunked' if chunk_size else 'logits'}_empty_shard"
            runs = [
                _train_language_model(scope, loss_name, chunk_size, empty_shard=True)
                for scope in (contextlib.nullcontext(), strategy.scope())
            ]
            _store(results, case, *runs)
            info[f"{case}/replicas"] = strategy.num_replicas_in_sync
    _token_normaliser(strategy, results)
    info["cskd_global"], info["cskd_per_replica_mean"] = _per_replica_gap(NUM_DEVICES["tf"])


def main(argv):
    mode, out = argv
    _setup(mode)
    import numpy as np

    results, info = {}, {}
    (run_jax if mode == "jax" else run_tf)(results, info)
    np.savez(out, **results)
    with open(out + ".json", "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
