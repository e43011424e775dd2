"""Small teacher/student pairs for the embedded data and quick experiments."""

import keras
from keras import layers


def mlp(input_shape, num_classes, hidden=(256, 256), dropout=0.0, name="mlp"):
    """A multilayer perceptron returning logits.

    Example:

    >>> from keras_cskd.models import mlp
    >>> mlp((8, 8, 1), 10, hidden=(32,)).output_shape
    (None, 10)
    """
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    for units in hidden:
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def small_cnn(input_shape, num_classes, filters=(32, 64), dense=128, name="small_cnn"):
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
    return keras.Model(inputs, outputs, name=name)
