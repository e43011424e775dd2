"""
Title: Distilling a keras-hub GPT-2 language model on Python's own source code
Author: keras-cskd contributors
Date created: 2026/12/04
Last modified: 2026/12/04
Description: A keras-hub GPT-2 distilled with forward/reverse KL, JSD, CSKD and a top-k cache.
Accelerator: None
"""

"""
## Introduction

Language-model distillation trains a small model to predict the next token
the way a large one does. This example does it with keras-hub's
`GPT2CausalLM` for both models, built from configurations (no download),
on text that ships with every Python installation: the source files of its
standard library, tokenised with a SentencePiece vocabulary trained here,
offline.

It compares, on held-out files, a student trained on the text alone
(cross-entropy) with students that add a distillation term from the
teacher: forward KL (Hinton's KD at temperature 1), reverse KL, the
generalized Jensen-Shannon divergence of GKD, CSKD over the batch's token
positions, and forward KL from a stored top-k cache of the teacher's
outputs (`keras_cskd.cache_teacher_top_k`), where the teacher is not run at
all while the student trains.

The models take keras-hub's inputs `{"token_ids", "padding_mask"}` and the
batches are what keras-hub's preprocessors produce: `(x, y,
sample_weight)`, where `sample_weight` marks the real next tokens. The
`Distiller` reads the padding from them: padded positions count in no
loss, metric or gradient.

Run it as `python examples/language_model_distillation.py [out_folder]`;
`--seeds 3` (after the folder) repeats every student with three seeds.
Each student's result is a JSON file in `out_folder/runs/`, so an
interrupted run resumes where it stopped.
"""

"""
## Setup
"""

import glob
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import keras_hub
import numpy as np

import keras_cskd

FAST = os.environ.get("KERAS_CSKD_FAST") == "1"  # a tiny run, for tests
LENGTH = 16 if FAST else 32  # tokens per sequence
VOCABULARY = 256 if FAST else 512
TRAIN_FILES, VALIDATION_FILES, TEST_FILES = (3, 1, 1) if FAST else (30, 8, 12)
MAX_CHARACTERS = 4_000 if FAST else 20_000  # per file: the first characters
TEACHER_EPOCHS = 1 if FAST else 40  # at most: early stopping on validation
STUDENT_EPOCHS = 1 if FAST else 8
WEIGHTS = (1.0,) if FAST else (0.5, 2.0)  # the distillation weights tried (validation)
arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
SEEDS = int(sys.argv[sys.argv.index("--seeds") + 1]) if "--seeds" in sys.argv else 1
OUT = Path(
    arguments[0]
    if arguments and not arguments[0].isdigit()
    else os.environ.get("KERAS_CSKD_OUT") or tempfile.mkdtemp(prefix="keras_cskd_")
)
(OUT / "runs").mkdir(parents=True, exist_ok=True)

"""
## Data: the Python standard library's source

Files are split into training, validation and test files (whole files,
so that no held-out function was seen in training). A SentencePiece BPE
vocabulary is trained on the training files with keras-hub's
`compute_sentence_piece_proto`. Each file's token stream is cut into
sequences of `LENGTH + 1` tokens; the last piece of a file is padded, as a
preprocessor pads a short document.
"""

library = Path(os.__file__).parent
files = sorted(glob.glob(str(library / "*.py")))
np.random.default_rng(0).shuffle(files)
needed = TRAIN_FILES + VALIDATION_FILES + TEST_FILES
texts = [Path(f).read_text(encoding="utf-8", errors="replace")[:MAX_CHARACTERS] for f in files]
texts = [t for t in texts if len(t) > 2_000][:needed]
train_texts = texts[:TRAIN_FILES]
validation_texts = texts[TRAIN_FILES : TRAIN_FILES + VALIDATION_FILES]
test_texts = texts[TRAIN_FILES + VALIDATION_FILES :]

proto_path = OUT / f"tokenizer-{VOCABULARY}.model"
if not proto_path.exists():
    import tensorflow as tf  # keras-hub's SentencePiece trainer reads a tf.data.Dataset

    lines = [line for text in train_texts for line in text.splitlines() if line.strip()]
    proto = keras_hub.tokenizers.compute_sentence_piece_proto(
        tf.data.Dataset.from_tensor_slices(lines), vocabulary_size=VOCABULARY, model_type="bpe"
    )
    proto_path.write_bytes(proto)
tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto_path.read_bytes())


def sequences(texts):
    """`(x, y, sample_weight)` as keras-hub's CausalLMPreprocessor gives
    them: x the tokens and their padding mask, y the next tokens,
    sample_weight 1 where y is a real token."""
    rows = []
    for text in texts:
        ids = np.asarray(keras.ops.convert_to_numpy(tokenizer.tokenize(text)), "int32") + 1
        for start in range(0, len(ids) - 1, LENGTH):
            rows.append(ids[start : start + LENGTH + 1])
    tokens = np.zeros((len(rows), LENGTH + 1), "int32")  # id 0: padding
    for row, ids in enumerate(rows):
        tokens[row, : len(ids)] = ids
    real = (tokens != 0).astype("int32")
    x = {"token_ids": tokens[:, :-1], "padding_mask": real[:, :-1]}
    return x, tokens[:, 1:], real[:, 1:].astype("float32")


train, validation, test = (sequences(t) for t in (train_texts, validation_texts, test_texts))
VOCABULARY_SIZE = VOCABULARY + 1  # the tokenizer's ids shifted by 1 for padding
print(
    f"{len(train[1])} training, {len(validation[1])} validation and {len(test[1])} test "
    f"sequences of {LENGTH} tokens; {int(train[2].sum())} training tokens"
)

"""
## Models

Both are keras-hub GPT-2 models built from a configuration. The student
has one transformer block of width 32 where the teacher has two of width
96: about 9x fewer parameters.
"""


def gpt2(layers, width, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=layers,
        num_heads=4,
        hidden_dim=width,
        intermediate_dim=4 * width,
        max_sequence_length=LENGTH,
        dropout=0.1,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def scores(model, data):
    """Perplexity and next-token accuracy over the real tokens only."""
    x, y, weights = data
    logits = np.asarray(model.predict(x, batch_size=256, verbose=0), "float64")
    keep = weights > 0
    logits, targets = logits[keep], y[keep]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {
        "perplexity": float(np.exp(-log_probs[np.arange(len(targets)), targets].mean())),
        "accuracy": float(np.mean(logits.argmax(1) == targets)),
    }


cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
teacher_path = OUT / "teacher.keras"
if teacher_path.exists():
    teacher = keras.saving.load_model(teacher_path)
else:
    import tensorflow as tf

    teacher = gpt2(layers=2, width=96, seed=0)
    teacher.compile(keras.optimizers.Adam(2e-3), cross_entropy, weighted_metrics=[])
    # keras-hub's `fit` turns NumPy arrays into a tf.data pipeline and then
    # ignores `shuffle=True` (Keras warns so): batches would follow the files
    # in order. A shuffled tf.data pipeline (reshuffled every epoch) instead.
    batches = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train[1]), seed=0).batch(32)
    # Trained to convergence: until the validation loss stops improving.
    stop = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    teacher.fit(
        batches, validation_data=validation, epochs=TEACHER_EPOCHS, callbacks=[stop], verbose=0
    )
    teacher.save(teacher_path)
teacher_scores = scores(teacher, test)
print(f"teacher: {teacher.count_params()} parameters, test {teacher_scores}")

"""
## Students

Every student starts from the same weights (per seed) and trains for the
same epochs with the same optimizer, through the same `Distiller` step and
data pipeline; the CE student is the `Distiller` with distillation weight 0.
The distilled students minimise `CE + w * divergence` at temperature 1
(the usual for language models); the weight `w` of each method is chosen
on the validation files from `WEIGHTS` (seed 100), and the test numbers are
reported for the chosen weight. The top-k student learns from a cache of the teacher's 16 most
probable next tokens per real token instead of the teacher itself.
"""

top_k_folder = OUT / "teacher-top-16"
if (top_k_folder / "index.json").exists():
    cache = keras_cskd.TopKCache(top_k_folder)
else:
    cache = keras_cskd.cache_teacher_top_k(teacher, train[0], top_k_folder, k=16)
print(
    f"top-k cache: {cache.tokens} tokens, {cache.bytes_per_token} bytes a token "
    f"(float32 logits: {4 * VOCABULARY_SIZE})"
)

METHODS = {
    "forward KL": lambda: keras_cskd.losses.KLDivergenceDistillation(temperature=1.0),
    "reverse KL": lambda: keras_cskd.losses.ReverseKLDistillation(),
    "JSD (beta 0.5)": lambda: keras_cskd.losses.JensenShannonDistillation(beta=0.5),
    "CSKD": lambda: keras_cskd.losses.CosineSimilarityDistillation(temperature=1.0),
    "forward KL, top-16 cache": lambda: keras_cskd.losses.KLDivergenceDistillation(1.0),
}


def train_student(method, weight, seed, evaluate_on):
    """One student; its scores, cached in OUT/runs as JSON."""
    name = f"{method}-w{weight:g}-seed{seed}-{evaluate_on}".replace(" ", "_").replace(",", "")
    path = OUT / "runs" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    student = gpt2(layers=1, width=32, seed=seed)
    # Every student, CE included (distillation weight 0), trains through the
    # same Distiller step and data pipeline (Keras shuffles the arrays).
    cached = method.endswith("cache")
    loss = METHODS[method]() if method in METHODS else METHODS["forward KL"]()
    distiller = keras_cskd.Distiller(
        student, None if cached else teacher, loss, distillation_loss_weight=weight
    )
    distiller.compile(keras.optimizers.Adam(2e-3))
    x, y, weights = train
    if cached:
        batches = cache.dataset(x, y, weights, batch_size=32, seed=seed)
        distiller.fit(batches, epochs=STUDENT_EPOCHS, verbose=0)
    else:
        distiller.fit(x, y, sample_weight=weights, batch_size=32, epochs=STUDENT_EPOCHS, verbose=0)
    data = validation if evaluate_on == "validation" else test
    result = {"method": method, "weight": weight, "seed": seed, **scores(student, data)}
    path.write_text(json.dumps(result))
    return result


if FAST:  # the tests: the mechanics of each kind of student, no tuning
    METHODS = {m: METHODS[m] for m in ("forward KL", "CSKD", "forward KL, top-16 cache")}
chosen = {"CE": 0.0}
for method in METHODS:
    if len(WEIGHTS) == 1:
        chosen[method] = WEIGHTS[0]
        continue
    tried = [train_student(method, w, 100, "validation") for w in WEIGHTS]
    chosen[method] = min(tried, key=lambda r: r["perplexity"])["weight"]
print("weights chosen on the validation files:", chosen)

results = {
    method: [train_student(method, chosen[method], seed, "test") for seed in range(SEEDS)]
    for method in chosen
}

"""
## Results

Test perplexity and next-token accuracy over the real tokens of the
held-out files; the mean over seeds, and for each distilled student the
mean paired difference from the CE student of the same seed (negative
perplexity: better), with its spread.
"""

print(f"\n{'student':<26} {'w':>4} {'perplexity':>11} {'accuracy':>9} {'vs CE (ppl)':>14}")
print(
    f"{'teacher':<26} {'':>4} {teacher_scores['perplexity']:>11.2f} "
    f"{teacher_scores['accuracy']:>9.4f}"
)
summary = {"teacher": teacher_scores, "cache_bytes_per_token": cache.bytes_per_token}
for method, runs in results.items():
    perplexity = np.array([r["perplexity"] for r in runs])
    accuracy = np.array([r["accuracy"] for r in runs])
    baseline = np.array([r["perplexity"] for r in results["CE"]])
    difference = perplexity - baseline
    spread = difference.std(ddof=1) if len(runs) > 1 else float("nan")
    versus = "-" if method == "CE" else f"{difference.mean():+.2f} ± {spread:.2f}"
    print(
        f"{method:<26} {chosen[method]:>4g} {perplexity.mean():>11.2f} "
        f"{accuracy.mean():>9.4f} {versus:>14}"
    )
    summary[method] = {"weight": chosen[method], "runs": runs}
(OUT / "results.json").write_text(json.dumps(summary, indent=1))

"""
The same as a Markdown table, with each paired difference's 95 %
t-interval (docs/results.md quotes it): against the CE student, and for
the top-k student against the dense forward-KL student of the same seed.
"""


def interval(values, baseline):
    """The mean paired difference with its 95 % t-interval, bold where it
    excludes 0 (`keras_cskd.statistics.paired_difference`)."""
    d = keras_cskd.statistics.paired_difference(values, baseline)
    if d["n"] < 2:
        return f"{d['mean']:+.2f}"
    bold = "**" if d["beyond_noise"] else ""
    return f"{bold}{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]{bold}"


def column(method, key):
    return np.array([r[key] for r in results[method]])


print("\n| student | w | test perplexity | next-token accuracy | Δ perplexity vs CE |")
print("|---|---:|---:|---:|---:|")
print(
    f"| teacher (2 blocks, width 96) | | {teacher_scores['perplexity']:.2f} | "
    f"{100 * teacher_scores['accuracy']:.2f} % | |"
)
for method in results:
    perplexity, accuracy = column(method, "perplexity"), column(method, "accuracy")
    versus = "" if method == "CE" else interval(perplexity, column("CE", "perplexity"))
    if method.endswith("cache"):
        dense = interval(perplexity, column("forward KL", "perplexity"))
        versus += f" (vs dense forward KL: {dense})"
    print(
        f"| {method} | {chosen[method]:g} | {perplexity.mean():.2f} ± {perplexity.std(ddof=1):.2f} "
        f"| {100 * accuracy.mean():.2f} % | {versus} |"
        if len(perplexity) > 1
        else f"| {method} | {chosen[method]:g} | {perplexity.mean():.2f} | "
        f"{100 * accuracy.mean():.2f} % | {versus} |"
    )

"""
docs/results.md ("Language models") shows the table of three seeds with
the default settings and what it does and does not show.
"""
