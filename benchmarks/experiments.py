"""Resumable distillation experiments: one result file per run, one report.

Each recipe fixes a data set, a teacher (trained once, then cached by the
hash of everything that determines it), a student and a schedule. Every
(recipe, method, seed) run writes its own small JSON file under
`--results/<recipe>-<hash>/`; running the same command again skips the
finished runs, so a long table is built over several sittings on a CPU,
and a run cut short is simply run again. `report` rebuilds the Markdown
tables and the plots from those files alone.

    # the two tables of docs/results.md (hours on 2 CPU cores, resumable)
    KERAS_BACKEND=tensorflow python benchmarks/experiments.py run --recipe hinton_mnist
    KERAS_BACKEND=tensorflow python benchmarks/experiments.py run --recipe fashion_mnist
    # tables, paired differences and plots from the result files
    python benchmarks/experiments.py report --out docs

Recipes:

- `hinton_mnist`: Hinton et al. 2015, Section 3. Teacher: 2 x 1200 ReLU,
  dropout (0.2 on the input, 0.5 on hidden units), max-norm 4 on each unit's
  incoming weights, inputs jittered by up to 2 pixels. Student: 2 x 800
  ReLU, no regularisation, no jitter (so the teacher's logits are cached).
  The paper reports 67 / 146 / 74 test errors for the teacher / the student
  alone / the student with soft targets at T = 20.
- `fashion_mnist`: full Fashion-MNIST (60,000 / 10,000). Teacher:
  `keras_cskd.models.conv_net` (BatchNorm, dropout, weight decay 5e-4,
  random 2-pixel translations and horizontal flips). Student: a
  1 x 256 ReLU MLP (`keras_cskd.models.mlp`) trained on the unaugmented
  images with cached teacher logits (STKD alone runs the teacher live, on
  its mixup batches).

Students use SGD with momentum 0.9, batch 128, learning rate 0.05 with
cosine decay to 0, no weight decay, the same for every method; the loss
weights are each method's published defaults (`METHODS`). Nothing was tuned
on the test set: the learning rate, epochs and loss weights were fixed
before the runs.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_CACHE = ROOT / "cskd-out" / "experiments-cache"

# Each method: the distillation loss(es) and the weights of the supervised
# and distillation terms. `live_teacher` runs the teacher in the step
# (mixup: the teacher must see the mixed images).
METHODS = {
    "ce": {"label": "CE (student alone)"},
    "kd_t20": {"label": "KD (T = 20)", "loss": ("kd", 20.0), "weights": (0.1, 0.9)},
    "kd": {"label": "KD (T = 4)", "loss": ("kd", 4.0), "weights": (0.1, 0.9)},
    "mse": {"label": "Logit MSE", "loss": ("mse",), "weights": (0.0, 1.0)},
    "cskd": {"label": "CSKD", "loss": ("cskd", 4.0), "weights": (1.0, 2.0)},
    "cskd_cswt": {
        "label": "CSKD+CSWT (per sample)",
        "loss": ("cskd_cswt", 4.0, "sample"),
        "weights": (1.0, 1.0),
    },
    "cskd_cswt_class": {
        "label": "CSKD+CSWT (per class)",
        "loss": ("cskd_cswt", 4.0, "class"),
        "weights": (1.0, 1.0),
    },
    "stkd": {
        "label": "STKD (mixup)",
        "loss": ("stkd", 4.0),
        "weights": (1.0, 1.0),
        "live_teacher": True,
    },
    "dist": {"label": "DIST", "loss": ("dist", 4.0), "weights": (1.0, 2.0)},
    "dkd": {
        "label": "DKD",
        "loss": ("dkd", 4.0, 1.0, 8.0),
        "weights": (1.0, 1.0),
        "warmup": 1 / 12,
    },
    # At lr 0.05 these two diverged on MNIST's MLP student (MSE: NaN in the
    # first epoch; DKD: every ReLU dead); the same loss at a 5x smaller
    # learning rate, reported next to the diverged runs, never instead of them.
    "mse_lr0.01": {
        "label": "Logit MSE (lr 0.01)",
        "loss": ("mse",),
        "weights": (0.0, 1.0),
        "lr": 0.01,
    },
    "dkd_lr0.01": {
        "label": "DKD (lr 0.01)",
        "loss": ("dkd", 4.0, 1.0, 8.0),
        "weights": (1.0, 1.0),
        "warmup": 1 / 12,
        "lr": 0.01,
    },
}
# The CSKD study (`--methods study`): one setting changed at a time from
# `cskd`, since CSKD is batch-wise (its columns have one entry per sample
# of the batch), and KD at the same batch sizes for a fair comparison.
STUDY = {
    "cskd_t1": {"label": "study: CSKD T = 1", "loss": ("cskd", 1.0), "weights": (1.0, 2.0)},
    "cskd_t8": {"label": "study: CSKD T = 8", "loss": ("cskd", 8.0), "weights": (1.0, 2.0)},
    "cskd_w1": {"label": "study: CSKD weight 1", "loss": ("cskd", 4.0), "weights": (1.0, 1.0)},
    "cskd_w8": {"label": "study: CSKD weight 8", "loss": ("cskd", 4.0), "weights": (1.0, 8.0)},
    "cskd_b32": {
        "label": "study: CSKD batch 32",
        "loss": ("cskd", 4.0),
        "weights": (1.0, 2.0),
        "batch_size": 32,
    },
    "cskd_b512": {
        "label": "study: CSKD batch 512",
        "loss": ("cskd", 4.0),
        "weights": (1.0, 2.0),
        "batch_size": 512,
    },
    "kd_b32": {
        "label": "study: KD batch 32",
        "loss": ("kd", 4.0),
        "weights": (0.1, 0.9),
        "batch_size": 32,
    },
    "kd_b512": {
        "label": "study: KD batch 512",
        "loss": ("kd", 4.0),
        "weights": (0.1, 0.9),
        "batch_size": 512,
    },
}
METHODS.update(STUDY)

RECIPES = {
    "hinton_mnist": {
        "title": "MNIST, Hinton et al. 2015 (Section 3)",
        "dataset": "mnist",
        "teacher": {
            "model": "mlp",
            "kwargs": {
                "hidden": [1200, 1200],
                "dropout": 0.5,
                "input_dropout": 0.2,
                "max_norm": 4.0,
            },
            "jitter": 2,
            "flip": False,
            "epochs": 30,
            "lr": 0.05,
            "weight_decay": 0.0,
            "batch_size": 128,
            "seed": 0,
        },
        "student": {
            "model": "mlp",
            "kwargs": {"hidden": [800, 800]},
            "epochs": 10,
            "lr": 0.05,
            "batch_size": 128,
        },
        "methods": [
            "ce",
            "kd_t20",
            "kd",
            "mse",
            "cskd",
            "cskd_cswt",
            "cskd_cswt_class",
            "dist",
            "dkd",
            "mse_lr0.01",
            "dkd_lr0.01",
        ],  # fmt: skip
        "metric": "errors",
        "paper": {"teacher": 67, "ce": 146, "kd_t20": 74},
    },
    "fashion_mnist": {
        "title": "Fashion-MNIST, full data",
        "dataset": "fashion_mnist",
        "teacher": {
            "model": "conv_net",
            "kwargs": {"dropout": 0.3},
            "jitter": 2,
            "flip": True,
            "epochs": 30,
            "lr": 0.05,
            "weight_decay": 5e-4,
            "batch_size": 128,
            "seed": 0,
        },
        "student": {
            "model": "mlp",
            "kwargs": {"hidden": [256]},
            "epochs": 20,
            "lr": 0.05,
            "batch_size": 128,
        },
        "methods": [
            "ce",
            "kd",
            "mse",
            "cskd",
            "cskd_cswt",
            "cskd_cswt_class",
            "dist",
            "dkd",
            "stkd",
            "mse_lr0.01",
            "dkd_lr0.01",
        ],  # fmt: skip
        "metric": "accuracy",
        "paper": {},
    },
}


# ------------------------------------------------------------ bookkeeping
def settings_hash(settings):
    """A short, stable hash of a JSON-able settings dict."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def write_json(path, payload):
    """Writes atomically: a run killed mid-write leaves the old file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_json(path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def resolve_recipe(name, epochs=None, teacher_epochs=None, limit=None, test_limit=None):
    """The recipe `name` with the command line's overrides (for smoke runs)."""
    recipe = json.loads(json.dumps(RECIPES[name]))
    recipe["name"] = name
    if epochs is not None:
        recipe["student"]["epochs"] = epochs
    if teacher_epochs is not None:
        recipe["teacher"]["epochs"] = teacher_epochs
    recipe["limit"] = limit
    recipe["test_limit"] = test_limit
    return recipe


def teacher_key(recipe, backend):
    """What determines the teacher: its data, model, schedule and backend."""
    return settings_hash(
        {
            "dataset": recipe["dataset"],
            "limit": recipe["limit"],
            "test_limit": recipe["test_limit"],
            "teacher": recipe["teacher"],
            "backend": backend,
        }
    )


def recipe_key(recipe, backend):
    """What determines a table: everything but the methods and seeds."""
    return settings_hash(
        {
            "teacher": teacher_key(recipe, backend),
            "student": recipe["student"],
            "backend": backend,
        }
    )


def run_key(recipe, backend, method):
    """What determines one run's result (its seed is in the file's name)."""
    settings = {k: v for k, v in METHODS[method].items() if k != "label"}
    return settings_hash({"recipe": recipe_key(recipe, backend), "method": settings})


def versions():
    import keras
    import numpy as np

    import keras_cskd

    info = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_cskd": getattr(keras_cskd, "__version__", "?"),
        "numpy": np.__version__,
        "backend": keras.backend.backend(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
    }
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        info[module] = __import__(module).__version__
    return info


# ------------------------------------------------------------------ data
def load_data(recipe):
    import numpy as np

    from keras_cskd import data

    folder = data.shared_data_folder(recipe["dataset"].replace("_", "-"))
    (x, y), (x_test, y_test) = data.load_idx_folder(folder)
    rng = np.random.default_rng(12345)  # subsets do not depend on the seeds
    if recipe["limit"] and recipe["limit"] < len(x):
        keep = np.sort(rng.permutation(len(x))[: recipe["limit"]])
        x, y = x[keep], y[keep]
    if recipe["test_limit"] and recipe["test_limit"] < len(x_test):
        keep = np.sort(rng.permutation(len(x_test))[: recipe["test_limit"]])
        x_test, y_test = x_test[keep], y_test[keep]
    return (x, y), (x_test, y_test)


# ---------------------------------------------------------------- models
def build_network(spec, input_shape, num_classes, name):
    from keras_cskd import models

    builder = {"mlp": models.mlp, "conv_net": models.conv_net}[spec["model"]]
    return builder(input_shape, num_classes, name=name, **spec["kwargs"])


def make_optimizer(lr, epochs, steps_per_epoch):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(lr, max(1, epochs * steps_per_epoch))
    return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)


def add_weight_decay(model, weight_decay):
    """Coupled (PyTorch SGD-style) weight decay as an L2 penalty on kernels."""
    import keras

    if weight_decay:
        for layer in model.layers:
            if hasattr(layer, "kernel_regularizer") and getattr(layer, "kernel", None) is not None:
                layer.kernel.regularizer = keras.regularizers.L2(weight_decay / 2.0)


def augmentation(spec, seed):
    """Keras' own random layers: up to `jitter` pixels of translation
    (nearest neighbour, zero fill) and optional horizontal flips."""
    import keras

    pipeline = []
    if spec.get("jitter"):
        pipeline.append(
            keras.layers.RandomTranslation(
                spec["jitter"] / 28.0,
                spec["jitter"] / 28.0,
                fill_mode="constant",
                interpolation="nearest",
                seed=seed,
            )
        )
    if spec.get("flip"):
        pipeline.append(keras.layers.RandomFlip("horizontal", seed=seed))
    return pipeline


def accuracy_and_errors(model, x, y, batch_size=1000):
    import numpy as np

    logits = model.predict(x, batch_size=batch_size, verbose=0)
    errors = int(np.sum(np.argmax(logits, axis=-1) != y))
    return 1.0 - errors / len(y), errors


# --------------------------------------------------------------- teacher
def get_teacher(recipe, backend, cache, data, log):
    """Trains the recipe's teacher, or loads it from the cache when one was
    trained with exactly these settings. Returns (teacher, record, train logits)."""
    import keras
    import numpy as np

    from keras_cskd import cache_teacher_logits

    (x, y), (x_test, y_test) = data
    spec = recipe["teacher"]
    key = teacher_key(recipe, backend)
    folder = Path(cache) / f"teacher-{recipe['name']}-{key}"
    record = read_json(folder / "teacher.json")
    keras.utils.set_random_seed(spec["seed"])
    teacher = build_network(spec, x.shape[1:], 10, "teacher")
    if record is not None and record.get("key") == key:
        try:
            teacher.load_weights(folder / "teacher.weights.h5")
            logits = np.load(folder / "train_logits.npy")
            if logits.shape == (len(x), 10):
                log(f"reusing teacher {key} ({record['test_accuracy']:.2%}) from {folder}")
                return teacher, record, logits
        except (OSError, ValueError) as error:
            log(f"cached teacher {folder} is unreadable ({error}); training it again")
    log(f"training teacher {key} ({spec['epochs']} epochs)")
    add_weight_decay(teacher, spec["weight_decay"])
    trainer = keras.Sequential(
        [keras.Input(x.shape[1:]), *augmentation(spec, spec["seed"]), teacher],
        name="teacher_training",
    )
    steps = math.ceil(len(x) / spec["batch_size"])
    trainer.compile(
        optimizer=make_optimizer(spec["lr"], spec["epochs"], steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    progress = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: log(
            f"  teacher epoch {epoch + 1}/{spec['epochs']}: test {logs['val_accuracy']:.2%}"
        )
    )
    start = time.time()
    history = trainer.fit(
        x, y, batch_size=spec["batch_size"], epochs=spec["epochs"],
        validation_data=(x_test, y_test), verbose=0, shuffle=True, callbacks=[progress],
    )  # fmt: skip
    seconds = time.time() - start
    accuracy, errors = accuracy_and_errors(teacher, x_test, y_test)
    logits = cache_teacher_logits(teacher, x, batch_size=1000)
    folder.mkdir(parents=True, exist_ok=True)
    teacher.save_weights(folder / "teacher-partial.weights.h5")
    os.replace(folder / "teacher-partial.weights.h5", folder / "teacher.weights.h5")
    np.save(folder / "train_logits.tmp.npy", logits)
    os.replace(folder / "train_logits.tmp.npy", folder / "train_logits.npy")
    record = {
        "key": key,
        "settings": spec,
        "parameters": int(teacher.count_params()),
        "test_accuracy": accuracy,
        "test_errors": errors,
        "curve": [float(v) for v in history.history["val_accuracy"]],
        "seconds": seconds,
        "versions": versions(),
    }
    write_json(folder / "teacher.json", record)  # last: marks the cache complete
    log(f"teacher {key}: {accuracy:.2%} ({errors} errors) in {seconds:.0f} s")
    return teacher, record, logits


# ---------------------------------------------------------------- student
def distillation_losses(method, epochs):
    """(losses for the Distiller, student weight, distillation weight, callbacks)."""
    from keras_cskd import callbacks, layers, losses

    config = METHODS[method]
    kind, *args = config["loss"]
    student_weight, distillation_weight = config["weights"]
    extra = []
    if kind == "kd":
        loss = losses.KLDivergenceDistillation(temperature=args[0])
    elif kind == "mse":
        loss = losses.LogitMSEDistillation()
    elif kind == "cskd":
        loss = losses.CosineSimilarityDistillation(temperature=args[0])
    elif kind == "cskd_cswt":
        # The paper's Eq. 9: CE + 2 CSKD(tau) + 2 CSKD(CSWT in [2, 6]).
        loss = [
            (losses.CosineSimilarityDistillation(temperature=args[0]), 2.0),
            (
                losses.CosineSimilarityDistillation(
                    cswt=layers.CosineSimilarityWeightedTemperature(2.0, 6.0, granularity=args[1]),
                    name="cswt_distillation",
                ),
                2.0,
            ),
        ]
    elif kind == "stkd":
        loss = losses.SimilarityTransferDistillation(temperature=args[0])
    elif kind == "dist":
        loss = losses.DISTDistillation(temperature=args[0])
    elif kind == "dkd":
        loss = losses.DecoupledKDDistillation(args[0], args[1], args[2])
        warmup = max(1, int(round(config["warmup"] * epochs)))
        extra.append(callbacks.DistillationWeightWarmup(epochs=warmup))
    else:  # pragma: no cover - METHODS and this function change together
        raise ValueError(kind)
    return loss, student_weight, distillation_weight, extra


def train_student(recipe, method, seed, teacher, teacher_logits, data):
    import keras
    import numpy as np

    from keras_cskd import Distiller

    (x, y), (x_test, y_test) = data
    spec = dict(recipe["student"])
    spec["batch_size"] = METHODS[method].get("batch_size", spec["batch_size"])
    spec["lr"] = METHODS[method].get("lr", spec["lr"])
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    student = build_network(spec, x.shape[1:], 10, "student")
    steps = math.ceil(len(x) / spec["batch_size"])
    optimizer = make_optimizer(spec["lr"], spec["epochs"], steps)
    fit_callbacks = []
    inputs = x
    if method == "ce":
        model = student
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    else:
        loss, student_weight, distillation_weight, fit_callbacks = distillation_losses(
            method, spec["epochs"]
        )
        live = METHODS[method].get("live_teacher", False)
        model = Distiller(
            student,
            teacher if live else None,
            loss,
            student_loss_weight=student_weight,
            distillation_loss_weight=distillation_weight,
            seed=seed,
        )
        model.compile(optimizer=optimizer, metrics=["accuracy"])
        if not live:
            inputs = {"x": x, "teacher_logits": teacher_logits}
    start = time.time()
    history = model.fit(
        inputs, y, batch_size=spec["batch_size"], epochs=spec["epochs"],
        validation_data=(x_test, y_test), callbacks=fit_callbacks, shuffle=True, verbose=0,
    )  # fmt: skip
    seconds = time.time() - start
    accuracy, errors = accuracy_and_errors(student, x_test, y_test)
    curve = [float(v) for v in history.history["val_accuracy"]]
    return {
        "final_accuracy": accuracy,
        "final_errors": errors,
        "best_accuracy": float(np.max(curve)),
        "best_epoch": int(np.argmax(curve)) + 1,
        "test_accuracy": curve,
        "train_loss": [float(v) for v in history.history["loss"]],
        "student_parameters": int(student.count_params()),
        "seconds": seconds,
    }


# -------------------------------------------------------------------- run
def run(args):
    import keras

    backend = keras.backend.backend()
    recipe = resolve_recipe(
        args.recipe, args.epochs, args.teacher_epochs, args.limit, args.test_limit
    )
    methods = args.methods.split(",") if args.methods else recipe["methods"]
    methods = [name for method in methods for name in (STUDY if method == "study" else [method])]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"experiments: unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    key = recipe_key(recipe, backend)
    folder = Path(args.results) / f"{recipe['name']}-{key}"
    log_path = folder / "log.txt"
    folder.mkdir(parents=True, exist_ok=True)

    def log(message):
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with open(log_path, "a") as handle:
            handle.write(line + "\n")

    command = " ".join(["KERAS_BACKEND=" + backend, "python", *sys.argv])
    write_json(
        folder / "recipe.json",
        {"recipe": recipe, "key": key, "backend": backend, "methods": METHODS},
    )
    # Runs in table order: every cheap method for every seed, live-teacher ones last.
    pending = []
    for seed in args.seeds:
        for method in methods:
            path = folder / f"{method}-seed{seed}.json"
            done = read_json(path)
            if done is not None and done.get("run_key") == run_key(recipe, backend, method):
                continue
            pending.append((METHODS[method].get("live_teacher", False), seed, method, path))
    pending.sort(key=lambda item: item[0])
    if not pending:
        log(f"{folder.name}: every run is finished")
        return folder
    log(f"{folder.name}: {len(pending)} run(s) to do")
    data = load_data(recipe)
    teacher, teacher_record, logits = get_teacher(recipe, backend, args.cache, data, log)
    write_json(folder / "teacher.json", teacher_record)
    for _, seed, method, path in pending:
        result = train_student(recipe, method, seed, teacher, logits, data)
        result.update(
            {
                "recipe": recipe["name"],
                "recipe_key": key,
                "run_key": run_key(recipe, backend, method),
                "teacher_key": teacher_record["key"],
                "method": method,
                "method_settings": METHODS[method],
                "seed": seed,
                "command": command,
                "versions": versions(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        write_json(path, result)
        log(
            f"{method:16s} seed {seed}: {result['final_accuracy']:.2%} "
            f"({result['final_errors']} errors) in {result['seconds']:.0f} s"
        )
    return folder


# ----------------------------------------------------------------- report
# Two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def mean_std(values):
    import numpy as np

    values = np.asarray(values, dtype="float64")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def paired(values, baseline):
    """Mean and std of per-seed differences, and whether they exceed seed
    noise: |mean| > t(0.975, n-1) * std / sqrt(n) (a paired t-test at 5 %)."""
    common = sorted(set(values) & set(baseline))
    if len(common) < 2:
        return None
    diffs = [values[s] - baseline[s] for s in common]
    mean, std = mean_std(diffs)
    bound = T_975[min(len(diffs) - 1, len(T_975)) - 1] * std / math.sqrt(len(diffs))
    return {"mean": mean, "std": std, "n": len(diffs), "significant": abs(mean) > bound}


def load_table(folder):
    """The runs of one results folder, grouped by method: {method: {seed: record}}."""
    folder = Path(folder)
    recipe = read_json(folder / "recipe.json")
    if recipe is None:
        return None
    runs = {}
    for path in sorted(folder.glob("*-seed*.json")):
        record = read_json(path)
        if record is None or record.get("recipe_key") != recipe["key"]:
            continue
        runs.setdefault(record["method"], {})[record["seed"]] = record
    return {
        "folder": folder.name,
        "recipe": recipe,
        "teacher": read_json(folder / "teacher.json"),
        "runs": runs,
    }


def _signed(value, digits):
    return f"{value:+.{digits}f}"


def _difference(cell, scale, digits):
    if cell is None:
        return "—"
    mark = " **" if cell["significant"] else ""
    text = f"{_signed(cell['mean'] * scale, digits)} ± {cell['std'] * abs(scale):.{digits}f}"
    return f"{mark.strip()}{text}{mark.strip()}"


def table_markdown(table):
    """One Markdown table (and a summary sentence) from `load_table`."""
    recipe = table["recipe"]["recipe"]
    errors = recipe["metric"] == "errors"
    runs = table["runs"]
    teacher = table["teacher"]
    paper = recipe.get("paper", {})
    order = [m for m in recipe["methods"] if m in runs] + sorted(set(runs) - set(recipe["methods"]))
    if errors:
        value = lambda r: r["final_errors"]  # noqa: E731
        unit, scale, digits = "test errors / 10,000", -len_test(table), 1
    else:
        value = lambda r: 100.0 * r["final_accuracy"]  # noqa: E731
        unit, scale, digits = "test accuracy %", 100.0, 2
    lines = []
    n_test = len_test(table)
    first = next(iter(next(iter(runs.values())).values()))
    student = recipe["student"]
    paper_note = f" — paper: {paper['teacher']} errors" if "teacher" in paper else ""
    lines.append(
        f"Teacher: {describe(recipe['teacher'])} "
        f"({teacher['parameters']:,} parameters), {100 * teacher['test_accuracy']:.2f} % "
        f"({teacher['test_errors']} errors){paper_note}. "
        f"Student: {describe(student)} ({first['student_parameters']:,} parameters), "
        f"{student['epochs']} epochs; "
        f"{n_test:,} test images; backend {table['recipe']['backend']}."
    )
    lines.append("")
    header = f"| Method | {unit} (final epoch) | best epoch | Δ vs CE | Δ vs KD | seeds |"
    if paper:
        header = header.replace("| seeds |", "| paper | seeds |")
    lines.append(header)
    lines.append("|" + " --- |" * (header.count("|") - 1))
    baseline = {s: value(r) for s, r in runs.get("ce", {}).items()}
    kd = {s: value(r) for s, r in runs.get("kd", {}).items()}
    for method in order:
        per_seed = {s: value(r) for s, r in runs[method].items()}
        mean, std = mean_std(list(per_seed.values()))
        best_values = [
            (1 - r["best_accuracy"]) * n_test if errors else 100 * r["best_accuracy"]
            for r in runs[method].values()
        ]
        best_mean, best_std = mean_std(best_values)
        vs_ce = paired(per_seed, baseline) if method != "ce" else None
        vs_kd = paired(per_seed, kd) if method != "kd" else None
        label = METHODS.get(method, {}).get("label", method)
        if any(r["final_accuracy"] < 0.2 for r in runs[method].values()):
            label += " — diverged"  # a constant prediction: chance on 10 balanced classes
        row = [
            label,
            f"{mean:.{digits}f} ± {std:.{digits}f}",
            f"{best_mean:.{digits}f} ± {best_std:.{digits}f}",
            _difference(vs_ce, 1.0, digits),
            _difference(vs_kd, 1.0, digits),
        ]
        if paper:
            row.append(str(paper.get(method, "")))
        seed_digits = 0 if errors else digits
        row.append(", ".join(f"{per_seed[s]:.{seed_digits}f}" for s in sorted(per_seed)))
        lines.append("| " + " | ".join(row) + " |")
    del scale
    return "\n".join(lines)


def describe(spec):
    """`mlp(hidden=[800, 800])`: a model spec of a recipe, as written in code."""
    arguments = ", ".join(f"{k}={v}" for k, v in spec["kwargs"].items())
    return f"`{spec['model']}({arguments})`"


LEGEND = (
    "Final-epoch values, mean ± sample std over seeds; 'best epoch' is the best of the "
    "per-epoch test values (what CRD/mdistiller tables report, optimistic). Δ: mean ± std "
    "of the per-seed differences (same seed, paired); **bold**: beyond seed noise "
    "(paired t-test, two-sided 5 %)."
)


def len_test(table):
    for runs in table["runs"].values():
        for record in runs.values():
            if record["final_accuracy"] < 1.0:
                return round(record["final_errors"] / (1.0 - record["final_accuracy"]))
    return 10000


def conclusion(table):
    """Which methods differ from CE and from KD beyond seed noise, in words."""
    errors = table["recipe"]["recipe"]["metric"] == "errors"
    runs = table["runs"]

    def value(record):
        return record["final_errors"] if errors else record["final_accuracy"]

    better = (lambda d: d < 0) if errors else (lambda d: d > 0)
    sentences = []
    for reference, name in (("ce", "CE alone"), ("kd", "KD (T = 4)")):
        if reference not in runs:
            continue
        base = {s: value(r) for s, r in runs[reference].items()}
        wins, losses, ties = [], [], []
        for method in table["recipe"]["recipe"]["methods"]:  # the study has its own rows
            if method == reference or method not in runs:
                continue
            cell = paired({s: value(r) for s, r in runs[method].items()}, base)
            if cell is None:
                continue
            label = METHODS.get(method, {}).get("label", method)
            if not cell["significant"]:
                ties.append(label)
            elif better(cell["mean"]):
                wins.append(label)
            else:
                losses.append(label)
        sentences.append(
            f"Against {name}: better beyond seed noise: {', '.join(wins) or 'none'}. "
            f"Worse beyond noise: {', '.join(losses) or 'none'}. "
            f"Within noise: {', '.join(ties) or 'none'}."
        )
    return " ".join(sentences)


def plot_table(table, path):
    """Bar chart (mean ± std over seeds, per-seed dots, the teacher as a
    labelled line, an axis that starts at 0 errors or spans the data
    honestly) and the test-accuracy curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    recipe = table["recipe"]["recipe"]
    errors = recipe["metric"] == "errors"
    runs = table["runs"]
    diverged = [m for m in runs if any(r["final_accuracy"] < 0.2 for r in runs[m].values())]
    order = [m for m in recipe["methods"] if m in runs and m not in diverged]
    n_test = len_test(table)
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(13, 4.6))
    for i, method in enumerate(order):
        values = np.array(
            [
                r["final_errors"] if errors else 100 * r["final_accuracy"]
                for r in runs[method].values()
            ]
        )
        spread = values.std(ddof=1) if len(values) > 1 else 0
        colour = "tab:gray" if method == "ce" else "tab:blue"
        bars.bar(i, values.mean(), yerr=spread, capsize=4, color=colour, alpha=0.8)
        bars.plot(np.full(len(values), i), values, "k.", markersize=4)
        curve = np.array([r["test_accuracy"] for r in runs[method].values()]) * 100
        curves.plot(np.arange(1, curve.shape[1] + 1), curve.mean(0), label=method)
    teacher = table["teacher"]
    teacher_value = teacher["test_errors"] if errors else 100 * teacher["test_accuracy"]
    bars.axhline(
        teacher_value, color="tab:red", linestyle="--", label=f"teacher ({teacher_value:.4g})"
    )
    if errors:
        bars.set_ylim(0, None)
        bars.set_ylabel(f"test errors out of {n_test:,} (lower is better)")
        paper = recipe.get("paper", {})
        for method, value in paper.items():
            if method in order:
                bars.plot(order.index(method), value, "r*", markersize=10)
        if paper:
            bars.plot([], [], "r*", label="paper (Hinton et al.)")
    else:
        values = [100 * r["final_accuracy"] for m in order for r in runs[m].values()]
        low = math.floor(min(values + [teacher_value]) - 1)
        bars.set_ylim(low, math.ceil(max(values + [teacher_value]) + 0.5))
        bars.set_ylabel(f"test accuracy % (axis starts at {low} %)")
    bars.set_xticks(range(len(order)), order, rotation=35, ha="right")
    bars.set_title(f"{recipe['title']}: mean ± std over seeds (dots: seeds)", fontsize=10)
    if diverged:
        bars.text(
            0.01, 0.99, f"not drawn (diverged): {', '.join(diverged)}",
            transform=bars.transAxes, va="top", fontsize=8,
        )  # fmt: skip
    bars.legend(loc="best", fontsize=8)
    curves.set_xlabel("student epoch")
    curves.set_ylabel("test accuracy % (mean over seeds)")
    curves.set_title("test accuracy per epoch")
    lows = [min(r["test_accuracy"][-1] for r in runs[m].values()) for m in order]
    curves.set_ylim(
        100 * min(lows) - 2,
        100 * max(max(r["test_accuracy"]) for m in order for r in runs[m].values()) + 0.3,
    )
    curves.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(args):
    """Writes one PNG per table and the tables, from the result files alone:
    between the markers of `<out>/results.md` when it has them, else to
    `<out>/results-tables.md`."""
    results = Path(args.results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []

    def recipe_order(folder):
        name = folder.name.rsplit("-", 1)[0]
        return (list(RECIPES).index(name) if name in RECIPES else len(RECIPES), folder.name)

    for folder in sorted((p for p in results.iterdir() if p.is_dir()), key=recipe_order):
        table = load_table(folder)
        if table is None or not table["runs"] or table["teacher"] is None:
            continue
        recipe = table["recipe"]["recipe"]
        image = out / "img" / f"results_{folder.name}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        plot_table(table, image)
        seconds = sum(r["seconds"] for runs in table["runs"].values() for r in runs.values())
        sections.append(
            "\n".join(
                [
                    f"### {recipe['title']} (`{folder.name}`)",
                    "",
                    table_markdown(table),
                    "",
                    LEGEND,
                    "",
                    conclusion(table),
                    "",
                    f"Student training time, all runs: {seconds / 60:.0f} min; teacher: "
                    f"{table['teacher']['seconds'] / 60:.0f} min. Command: "
                    f"`{next(iter(next(iter(table['runs'].values())).values()))['command']}`.",
                    "",
                    f"![{recipe['title']}](img/{image.name})",
                ]
            )
        )
    text = "\n\n".join(sections) + "\n"
    page = out / "results.md"
    if page.exists() and START in page.read_text():
        before, rest = page.read_text().split(START, 1)
        after = rest.split(END, 1)[1] if END in rest else ""
        page.write_text(f"{before}{START}\n\n{text}\n{END}{after}")
    else:
        (out / "results-tables.md").write_text(text)
    print(text)
    return text


# docs/results.md: the report replaces what lies between these markers.
START = "<!-- experiments report: start (generated by benchmarks/experiments.py report) -->"
END = "<!-- experiments report: end -->"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    go.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    go.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    go.add_argument(
        "--methods", default=None, help="comma-separated, or 'study'; default: the recipe's"
    )
    go.add_argument("--results", default=str(DEFAULT_RESULTS))
    go.add_argument("--cache", default=str(DEFAULT_CACHE), help="teachers and their logits")
    go.add_argument("--epochs", type=int, default=None, help="override (smoke runs)")
    go.add_argument("--teacher-epochs", type=int, default=None, help="override (smoke runs)")
    go.add_argument("--limit", type=int, default=None, help="training subset (smoke runs)")
    go.add_argument("--test-limit", type=int, default=None, help="test subset (smoke runs)")
    show = commands.add_parser("report", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    show.add_argument("--results", default=str(DEFAULT_RESULTS))
    show.add_argument("--out", default=str(ROOT / "docs"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.command == "run":
        from keras_cskd import _backend

        # Seeds x methods fits of the same student: each program compiles once (JAX).
        with _backend.compile_identical_programs_once():
            run(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
