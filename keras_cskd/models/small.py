"""Small teacher/student pairs for the embedded data and quick experiments."""

import collections

import keras
from keras import layers

_BUILT = collections.Counter()


def _unique(name, default):
    """`name` as given, or `default`, `default_1`, ... (one per model
    built in this process), so that a teacher and a student built by the
    same function have different names in messages and summaries."""
    if name is not None:
        return name
    count = _BUILT[default]
    _BUILT[default] += 1
    return default if count == 0 else f"{default}_{count}"


def mlp(
    input_shape,
    num_classes,
    hidden=(256, 256),
    dropout=0.0,
    input_dropout=0.0,
    max_norm=None,
    name=None,
):
    """A multilayer perceptron returning logits.

    `dropout` follows each hidden layer and `input_dropout` the flattened
    input; `max_norm` caps the L2 norm of each unit's incoming weights
    (`keras.constraints.MaxNorm`), the regularisation of Hinton et al.'s
    MNIST teacher (2 x 1200 ReLU units, dropout, max-norm, jittered inputs).

    Example:

    >>> from keras_cskd.models import mlp
    >>> mlp((8, 8, 1), 10, hidden=(32,)).output_shape
    (None, 10)
    """
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    if input_dropout:
        x = layers.Dropout(input_dropout)(x)
    constraint = keras.constraints.MaxNorm(max_norm) if max_norm else None
    for units in hidden:
        x = layers.Dense(units, activation="relu", kernel_constraint=constraint)(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=_unique(name, "mlp"))


def small_cnn(input_shape, num_classes, filters=(32, 64), dense=128, name=None):
    """A small conv net with BatchNorm returning logits (teacher-sized for
    8x8 digits with the default filters, student-sized with fewer).

    Example:

    >>> from keras_cskd.models import small_cnn
    >>> small_cnn((8, 8, 1), 10, filters=(8,)).output_shape
    (None, 10)
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for width in filters:
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x) if len(filters) > 2 else layers.Flatten()(x)
    if dense:
        x = layers.Dense(dense, activation="relu")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=_unique(name, "small_cnn"))


def conv_net(
    input_shape,
    num_classes,
    blocks=((32,), (64, 64), (128,)),
    dense=256,
    dropout=0.5,
    name=None,
):
    """A VGG-style conv net returning logits: each block is 3x3 convolutions
    (BatchNorm + ReLU) followed by 2x2 max pooling, then dropout and a
    hidden dense layer. The default (about 0.43 M parameters, 15 M
    multiply-adds on 28x28 inputs) is the Fashion-MNIST teacher of
    `benchmarks/experiments.py`.

    Example:

    >>> from keras_cskd.models import conv_net
    >>> conv_net((28, 28, 1), 10).output_shape
    (None, 10)
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for block in blocks:
        for width in block:
            x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    if dense:
        x = layers.Dense(dense, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=_unique(name, "conv_net"))
