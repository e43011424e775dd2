"""The CIFAR model zoo: parameter counts against the PyTorch originals,
output shapes, 28x28x1 inputs, PyTorch-faithful details, forward passes.

Parameter counts compared here are `count_parameters(model)`: Keras'
trainable + non-trainable weights minus BatchNorm's moving mean/variance,
i.e. exactly PyTorch's `sum(p.numel() for p in model.parameters())` (BN
running statistics are buffers in PyTorch, not parameters).

Expected values (32x32x3 inputs, 100 classes) are PyTorch's counts of the CRD
definitions (github.com/HobbitLong/RepDistiller `models/`, reused unchanged
by github.com/megvii-research/mdistiller `mdistiller/models/cifar/`),
obtained by instantiating those definitions with torch 2.13; resnet8x4 and
resnet32x4 are also given by the spec (docs/methods.md §7). With the
PyTorch weights copied into the Keras ports, the eval-mode logits of every
model agreed to within 1e-6 (checked once while porting; torch is not a test
dependency).

Counting runs on uninitialised models (`StatelessScope(initialize_variables=
False)`): shapes are known but no random initialiser runs, so all 20 models
are checked in seconds on every backend (JAX otherwise compiles one XLA
program per weight shape). Forward passes run on a few small models only.
"""

import keras
import numpy as np
import pytest

from keras_cskd import models
from keras_cskd.models import cifar

EXPECTED_PARAMS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,  # spec §7
    "resnet32x4": 7_433_860,  # spec §7
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "mobilenetv2": 812_836,  # CRD "MobileNetV2" = mobile_half (width 0.5)
    "shufflenetv2": 1_355_528,  # CRD "ShuffleV2" (net size 1)
}

# The ten architectures of the CIFAR KD benchmark tables.
BENCHMARK_MODELS = (
    "resnet8x4",
    "resnet32x4",
    "resnet20",
    "resnet56",
    "wrn_16_2",
    "wrn_40_2",
    "vgg8",
    "vgg13",
    "mobilenetv2",
    "shufflenetv2",
)


def _uninitialised(name, **kwargs):
    """Builds a model without running its initialisers; returns
    (parameter count, output shape, first conv kernel shape, classifier
    input width)."""
    with keras.StatelessScope(initialize_variables=False):
        model = models.get(name, **kwargs)
        count = models.count_parameters(model)
        convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        dense = model.get_layer("logits")
        info = (count, model.output_shape, tuple(convs[0].kernel.shape), dense.kernel.shape[0])
    return info


@pytest.fixture(scope="module", autouse=True)
def _drop_uninitialised_variables():
    yield
    keras.utils.clear_session()


@pytest.fixture
def fresh_keras():
    """Uninitialised variables stay registered in Keras' global state, and
    the next symbolic build outside a StatelessScope initialises them all
    (slow on JAX, which compiles one program per weight shape): tests that
    build real models start from a clean session."""
    keras.utils.clear_session()


def test_zoo_covers_the_benchmark_and_the_expected_counts():
    assert set(BENCHMARK_MODELS) <= set(models.MODELS)
    assert set(EXPECTED_PARAMS) == set(models.MODELS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_count_matches_pytorch_original(name):
    count, output_shape, _, _ = _uninitialised(name)
    assert count == EXPECTED_PARAMS[name]
    assert output_shape == (None, 100)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
@pytest.mark.parametrize("stem_stride", [None, 2])
def test_fashion_mnist_shape_changes_only_stem_and_classifier(name, stem_stride):
    """28x28x1 / 10 classes: the stem conv reads 1 channel instead of 3 and
    the classifier has 10 outputs; nothing else changes (global average
    pooling replaces the fixed 8x8/4x4/2x2 windows)."""
    kwargs = {} if stem_stride is None else {"stem_stride": stem_stride}
    count, output_shape, kernel, features = _uninitialised(
        name, input_shape=(28, 28, 1), num_classes=10, **kwargs
    )
    assert output_shape == (None, 10)
    kh, kw, channels_in, channels_out = kernel
    assert channels_in == 1
    stem_saving = kh * kw * channels_out * 2  # 3 -> 1 input channels
    head_saving = (features + 1) * 90  # 100 -> 10 classes
    assert count == EXPECTED_PARAMS[name] - stem_saving - head_saving


@pytest.mark.slow  # builds every zoo model
def test_count_parameters_is_keras_count_minus_batchnorm_statistics(fresh_keras):
    model = models.resnet8(input_shape=(16, 16, 3), num_classes=10)
    bn_channels = sum(
        layer.gamma.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert models.count_parameters(model) == trainable + non_trainable - 2 * bn_channels
    assert models.count_parameters(model) == model.count_params() - 2 * bn_channels
    # Freezing moves weights to non-trainable; PyTorch still counts them.
    model.trainable = False
    assert models.count_parameters(model) == trainable + non_trainable - 2 * bn_channels


def test_batchnorm_matches_pytorch_defaults(fresh_keras):
    model = models.wrn_16_1(input_shape=(16, 16, 3), num_classes=10)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    for layer in norms:
        assert layer.momentum == pytest.approx(0.9)
        assert layer.epsilon == pytest.approx(1e-5)


def test_biases_match_the_originals():
    vgg = _bias_flags("vgg8")
    assert vgg["conv"] == {True}  # PyTorch nn.Conv2d default bias, kept before BN
    for name in ("resnet8", "wrn_16_1", "mobilenetv2", "shufflenetv2"):
        assert _bias_flags(name)["conv"] == {False}


def _bias_flags(name):
    with keras.StatelessScope(initialize_variables=False):
        model = models.get(name)
        convs = [
            layer
            for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
        ]
        return {"conv": {layer.use_bias for layer in convs}}


def test_strided_conv_samples_pytorch_grid(fresh_keras):
    """A stride-2 3x3 conv pads 1 pixel on each side like PyTorch, so its
    outputs sit over input pixels 0, 2, 4, ... (Keras' "same" would use 1, 3, ...)."""
    inputs = keras.Input((6, 6, 1))
    outputs = cifar._conv(inputs, 1, 3, strides=2, name="probe")
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1] = 1.0  # picks the centre pixel
    model.get_layer("probe").set_weights([kernel])
    x = np.arange(36, dtype="float32").reshape(1, 6, 6, 1)
    y = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_array_equal(y[0, :, :, 0], x[0, ::2, ::2, 0])


def test_channel_shuffle_matches_nchw_view_permute(fresh_keras):
    """PyTorch: x.view(N, 2, C/2, H, W).permute(0, 2, 1, 3, 4).reshape(N, C, H, W)."""
    inputs = keras.Input((1, 1, 6))
    model = keras.Model(inputs, cifar._channel_shuffle(inputs, "probe"))
    x = np.arange(6, dtype="float32").reshape(1, 1, 1, 6)
    y = keras.ops.convert_to_numpy(model(x)).reshape(-1)
    expected = np.arange(6).reshape(2, 3).T.reshape(-1)  # [0, 3, 1, 4, 2, 5]
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize(
    "name, input_shape, num_classes",
    [("resnet8", (28, 28, 1), 10), ("wrn_16_1", (32, 32, 3), 100)],
)
def test_forward_pass(name, input_shape, num_classes, fresh_keras):
    keras.utils.set_random_seed(0)
    model = models.get(name, input_shape=input_shape, num_classes=num_classes)
    x = np.random.default_rng(0).random((2, *input_shape), dtype="float32")
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (2, num_classes)
    assert np.all(np.isfinite(logits))
    # Logits, not probabilities.
    assert not np.allclose(logits.sum(axis=1), 1.0)
    trained = keras.ops.convert_to_numpy(model(x, training=True))
    assert trained.shape == (2, num_classes) and np.all(np.isfinite(trained))


def test_stem_stride_two_halves_the_feature_maps(fresh_keras):
    model = models.resnet8(input_shape=(28, 28, 1), num_classes=10, stem_stride=2)
    assert model.get_layer("relu1").output.shape[1:3] == (14, 14)
    assert model.get_layer("layer3_block0_out").output.shape[1:3] == (4, 4)
    with pytest.raises(ValueError, match="stem_stride"):
        models.resnet8(stem_stride=3)


def test_get_accepts_crd_names_and_rejects_unknown():
    with keras.StatelessScope(initialize_variables=False):
        assert models.get("MobileNetV2").name == "mobilenetv2"
        assert models.get("mobile_half").name == "mobilenetv2"
        assert models.get("ShuffleV2").name == "shufflenetv2"
        assert models.get("WRN-16-2").name == "wrn_16_2"
    with pytest.raises(ValueError, match="Unknown model"):
        models.get("resnet9000")


def test_width_reduced_variants():
    with keras.StatelessScope(initialize_variables=False):
        narrow = models.resnet(20, (8, 8, 16, 32), num_classes=10)
        assert narrow.output_shape == (None, 10)
        assert models.count_parameters(narrow) < EXPECTED_PARAMS["resnet20"] / 3
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.resnet(10)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        models.wide_resnet(12, 2)
