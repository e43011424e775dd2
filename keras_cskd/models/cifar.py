"""The CIFAR knowledge-distillation model zoo, ported to Keras 3.

(Over 400 lines: one module for the zoo of the benchmark, one builder a
family, as in RepDistiller's and mdistiller's `models/`.)

Keras ports of the architectures of the standard CIFAR-100 distillation
benchmark (CRD, Tian et al. 2020, github.com/HobbitLong/RepDistiller, reused
unchanged by mdistiller): the CIFAR ResNets (resnet8 ... resnet110,
resnet8x4, resnet32x4), the Wide ResNets (wrn_16_1 ... wrn_40_2), VGG with
BatchNorm (vgg8 ... vgg19), MobileNetV2 with width 0.5 ("MobileNetV2" /
`mobile_half` in those repos) and ShuffleNetV2 (`ShuffleV2`).

Every model is built with the functional API from `keras.layers` only, so it
runs on TensorFlow, JAX and PyTorch, and returns class **logits** (no
softmax). Faithfulness to the PyTorch originals:

- **Parameters**: the same layers with the same biases (convolutions without
  bias except VGG's, which keep PyTorch's default bias even before
  BatchNorm), so `count_parameters(model)` equals PyTorch's
  `sum(p.numel() for p in model.parameters())` (see `tests/test_models.py`).
- **BatchNorm**: `epsilon=1e-5`, `momentum=0.9` (PyTorch's `momentum=0.1`).
- **Padding**: strided 3x3 convolutions pad one pixel on every side like
  PyTorch (`ZeroPadding2D(1)` + `"valid"`), not Keras' asymmetric `"same"`,
  so the sampling grid is the original one.
- **Initialisation**: the originals' schemes (Kaiming-normal fan-out
  convolutions, normal(0, 0.01) or PyTorch-default classifiers, PyTorch
  defaults throughout ShuffleNetV2), with depthwise fan-in/fan-out mapped
  from PyTorch's grouped-convolution convention.

Other input sizes (e.g. Fashion-MNIST's 28x28x1): the first convolution takes
the input's channels (its parameter count changes accordingly, e.g. 1 instead
of 3 input channels) and keeps the original stride; the final fixed-window
average pooling (`AvgPool2d(8)` in the ResNets/WRNs, `AvgPool2d(4)` in
ShuffleNetV2, `AvgPool2d(2)` in MobileNetV2, adaptive in VGG) is a
`GlobalAveragePooling2D`, identical at 32x32 and defined at any size. At
28x28 the ResNet/WRN feature maps are 28/14/7 instead of 32/16/8;
PyTorch-style padding keeps odd sizes as PyTorch would (7 -> 4).
`stem_stride` sets the stride of the first convolution: the default is the
original's (1; 2 for MobileNetV2), and `stem_stride=2` quarters the compute of
every later layer (useful on CPU).

Example:

>>> from keras_cskd.models import resnet8, count_parameters
>>> model = resnet8(input_shape=(28, 28, 1), num_classes=10)
>>> model.output_shape, count_parameters(model)
((None, 10), 77754)
"""

import math

import keras
from keras import layers

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
BN_EPSILON = 1e-5  # PyTorch default

__all__ = [
    "count_parameters",
    "resnet",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wide_resnet",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg",
    "vgg8",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "mobilenetv2",
    "shufflenetv2",
]


# --------------------------------------------------------------- utilities
def count_parameters(model):
    """Number of learned parameters, comparable with PyTorch's
    `sum(p.numel() for p in model.parameters())`.

    Trainable plus non-trainable weights, minus BatchNorm's moving mean and
    variance (PyTorch keeps those as buffers, not parameters). Frozen
    layers still count, as `requires_grad=False` parameters do in PyTorch.

    Example:

    >>> import keras
    >>> from keras_cskd.models import count_parameters, resnet8x4
    >>> with keras.StatelessScope(initialize_variables=False):  # build without initialising
    ...     model = resnet8x4()
    >>> count_parameters(model)  # PyTorch's count: BatchNorm statistics excluded
    1233540
    """
    total = 0
    for weight in model.weights:
        if "moving_mean" in weight.path or "moving_variance" in weight.path:
            continue
        total += math.prod(weight.shape)
    return int(total)


def _builder_example(model_name):
    """The doctest example appended to each named builder's docstring."""
    return (
        "\n\nExample:\n\n"
        ">>> import keras\n"
        f">>> from keras_cskd.models import {model_name}\n"
        ">>> with keras.StatelessScope(initialize_variables=False):  # build without initialising\n"
        f"...     model = {model_name}(num_classes=10)\n"
        ">>> model.output_shape\n"
        "(None, 10)\n"
    )


# Initialisers reproducing PyTorch's. Keras computes a conv kernel's
# fans as (kh*kw*in, kh*kw*out) like PyTorch, but a DepthwiseConv2D kernel is
# (kh, kw, C, 1), so its Keras fan_in (kh*kw*C) is PyTorch's fan_out of the
# equivalent grouped conv (C, 1, kh, kw) and vice versa.
def _kaiming_fan_out():
    # nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"), and
    # normal(0, sqrt(2 / (k*k*out_channels))) as written by hand in WRN,
    # VGG and MobileNetV2.
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def _kaiming_fan_out_depthwise():
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def _torch_default():
    # PyTorch's default for Conv2d/Linear weights: kaiming_uniform(a=sqrt(5))
    # = U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_default_depthwise():
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_out", "uniform")


def _torch_default_bias(fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def _pad_for(kernel_size, strides):
    """PyTorch's `padding=k//2`: "same" for stride 1 (identical, odd kernel);
    explicit symmetric padding for strided convolutions."""
    if kernel_size == 1:
        return None, "valid"
    if strides == 1:
        return None, "same"
    return kernel_size // 2, "valid"


def _conv(x, filters, kernel_size, strides=1, use_bias=False, init="kaiming", name=None):
    pad, padding = _pad_for(kernel_size, strides)
    if pad:
        x = layers.ZeroPadding2D(pad, name=None if name is None else name + "_pad")(x)
    if init == "kaiming":
        kernel_init, bias_init = _kaiming_fan_out(), "zeros"
    else:  # PyTorch default
        fan_in = kernel_size * kernel_size * x.shape[-1]
        kernel_init, bias_init = _torch_default(), _torch_default_bias(fan_in)
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=kernel_init,
        bias_initializer=bias_init,
        name=name,
    )(x)


def _depthwise(x, strides=1, init="kaiming", name=None):
    pad, padding = _pad_for(3, strides)
    if pad:
        x = layers.ZeroPadding2D(pad, name=None if name is None else name + "_pad")(x)
    kernel_init = _kaiming_fan_out_depthwise() if init == "kaiming" else _torch_default_depthwise()
    return layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding=padding,
        use_bias=False,
        depthwise_initializer=kernel_init,
        name=name,
    )(x)


def _bn(x, name=None):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def _relu(x, name=None):
    return layers.ReLU(name=name)(x)


def _classifier(x, num_classes, init):
    """The final linear layer. `init`: "torch" (PyTorch default weight and
    bias), "torch_zero_bias" (default weight, zero bias: WRN) or "normal"
    (normal(0, 0.01), zero bias: VGG, MobileNetV2)."""
    fan_in = x.shape[-1]
    if init == "normal":
        kernel_init, bias_init = keras.initializers.RandomNormal(0.0, 0.01), "zeros"
    elif init == "torch_zero_bias":
        kernel_init, bias_init = _torch_default(), "zeros"
    else:
        kernel_init, bias_init = _torch_default(), _torch_default_bias(fan_in)
    return layers.Dense(
        num_classes, kernel_initializer=kernel_init, bias_initializer=bias_init, name="logits"
    )(x)


def _check_stride(stem_stride):
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}.")


# ------------------------------------------------------------ CIFAR ResNet
def _resnet_basic_block(x, planes, strides, name):
    shortcut = x
    out = _conv(x, planes, 3, strides, name=name + "_conv1")
    out = _bn(out, name + "_bn1")
    out = _relu(out, name + "_relu1")
    out = _conv(out, planes, 3, 1, name=name + "_conv2")
    out = _bn(out, name + "_bn2")
    if strides != 1 or x.shape[-1] != planes:
        shortcut = _conv(x, planes, 1, strides, name=name + "_downsample_conv")
        shortcut = _bn(shortcut, name + "_downsample_bn")
    out = layers.Add(name=name + "_add")([out, shortcut])
    return _relu(out, name + "_out")


def resnet(
    depth,
    filters=(16, 16, 32, 64),
    input_shape=(32, 32, 3),
    num_classes=100,
    stem_stride=1,
    name=None,
):
    """The CIFAR ResNet of the CRD benchmark (basic blocks, depth 6n + 2).

    A 3x3 stem conv with `filters[0]` channels, three stages of n basic
    blocks with `filters[1:]` channels (strides 1, 2, 2; 1x1-conv + BN
    projection shortcuts where the shape changes), global average pooling and
    a linear classifier. `resnet20` is `resnet(20)`, `resnet8x4` is
    `resnet(8, (32, 64, 128, 256))`; other widths give width-reduced
    variants, e.g. `resnet(20, (8, 8, 16, 32))`.

    Example:

    >>> import keras
    >>> from keras_cskd.models import count_parameters, resnet
    >>> with keras.StatelessScope(initialize_variables=False):  # build without initialising
    ...     model = resnet(8, (32, 64, 128, 256), num_classes=100)  # = resnet8x4
    >>> model.output_shape, count_parameters(model)
    ((None, 100), 1233540)
    """
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"A CIFAR ResNet has depth 6n + 2 (8, 14, 20, ...), got {depth}.")
    if len(filters) != 4:
        raise ValueError(f"filters must hold 4 widths (stem, 3 stages), got {filters!r}.")
    _check_stride(stem_stride)
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = _conv(inputs, filters[0], 3, stem_stride, name="conv1")
    x = _bn(x, "bn1")
    x = _relu(x, "relu1")
    for stage, (planes, strides) in enumerate(zip(filters[1:], (1, 2, 2), strict=True), start=1):
        for index in range(blocks):
            x = _resnet_basic_block(
                x, planes, strides if index == 0 else 1, name=f"layer{stage}_block{index}"
            )
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = _classifier(x, num_classes, "torch")
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def _resnet_factory(depth, filters, model_name):
    def build(input_shape=(32, 32, 3), num_classes=100, stem_stride=1):
        return resnet(depth, filters, input_shape, num_classes, stem_stride, name=model_name)

    build.__name__ = model_name
    build.__qualname__ = model_name
    width = "" if filters == (16, 16, 32, 64) else f", filters {list(filters)}"
    build.__doc__ = (
        f"CIFAR ResNet-{depth} (CRD's `{model_name}`{width}); returns logits.\n\n"
        "See `resnet` and the module docstring for the port's details."
    ) + _builder_example(model_name)
    return build


resnet8 = _resnet_factory(8, (16, 16, 32, 64), "resnet8")
resnet14 = _resnet_factory(14, (16, 16, 32, 64), "resnet14")
resnet20 = _resnet_factory(20, (16, 16, 32, 64), "resnet20")
resnet32 = _resnet_factory(32, (16, 16, 32, 64), "resnet32")
resnet44 = _resnet_factory(44, (16, 16, 32, 64), "resnet44")
resnet56 = _resnet_factory(56, (16, 16, 32, 64), "resnet56")
resnet110 = _resnet_factory(110, (16, 16, 32, 64), "resnet110")
resnet8x4 = _resnet_factory(8, (32, 64, 128, 256), "resnet8x4")
resnet32x4 = _resnet_factory(32, (32, 64, 128, 256), "resnet32x4")


# -------------------------------------------------------------- Wide ResNet
def _wrn_block(x, planes, strides, name):
    """Pre-activation basic block. Where the width changes, the shortcut
    (a bare 1x1 conv) also reads the BN-ReLU'd input, as in the original."""
    equal = x.shape[-1] == planes
    activated = _relu(_bn(x, name + "_bn1"), name + "_relu1")
    out = _conv(activated, planes, 3, strides, name=name + "_conv1")
    out = _relu(_bn(out, name + "_bn2"), name + "_relu2")
    out = _conv(out, planes, 3, 1, name=name + "_conv2")
    if equal:
        if strides != 1:
            raise ValueError("A WRN block with equal widths must have stride 1.")
        shortcut = x
    else:
        shortcut = _conv(activated, planes, 1, strides, name=name + "_shortcut")
    return layers.Add(name=name + "_add")([shortcut, out])


def wide_resnet(
    depth,
    widen_factor,
    input_shape=(32, 32, 3),
    num_classes=100,
    stem_stride=1,
    name=None,
):
    """The Wide ResNet of the CRD benchmark (depth 6n + 4, no dropout).

    A 3x3 stem conv (16 channels), three stages of n pre-activation blocks
    with 16k, 32k, 64k channels (strides 1, 2, 2), a final BN-ReLU, global
    average pooling and a linear classifier.

    Example:

    >>> import keras
    >>> from keras_cskd.models import count_parameters, wide_resnet
    >>> with keras.StatelessScope(initialize_variables=False):  # build without initialising
    ...     model = wide_resnet(16, 2)  # = wrn_16_2
    >>> model.output_shape, count_parameters(model)
    ((None, 100), 703284)
    """
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"A Wide ResNet has depth 6n + 4 (10, 16, 22, ...), got {depth}.")
    _check_stride(stem_stride)
    blocks = (depth - 4) // 6
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    inputs = keras.Input(input_shape)
    x = _conv(inputs, 16, 3, stem_stride, name="conv1")
    for stage, (planes, strides) in enumerate(zip(widths, (1, 2, 2), strict=True), start=1):
        for index in range(blocks):
            x = _wrn_block(
                x, planes, strides if index == 0 else 1, name=f"block{stage}_layer{index}"
            )
    x = _relu(_bn(x, "bn1"), "relu")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = _classifier(x, num_classes, "torch_zero_bias")
    return keras.Model(inputs, outputs, name=name or f"wrn_{depth}_{widen_factor}")


def _wrn_factory(depth, widen_factor):
    model_name = f"wrn_{depth}_{widen_factor}"

    def build(input_shape=(32, 32, 3), num_classes=100, stem_stride=1):
        return wide_resnet(depth, widen_factor, input_shape, num_classes, stem_stride, model_name)

    build.__name__ = model_name
    build.__qualname__ = model_name
    build.__doc__ = (
        f"WRN-{depth}-{widen_factor} (CRD's `{model_name}`); returns logits.\n\n"
        "See `wide_resnet` and the module docstring for the port's details."
    ) + _builder_example(model_name)
    return build


wrn_16_1 = _wrn_factory(16, 1)
wrn_16_2 = _wrn_factory(16, 2)
wrn_40_1 = _wrn_factory(40, 1)
wrn_40_2 = _wrn_factory(40, 2)


# ---------------------------------------------------------------------- VGG
VGG_CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


def vgg(config, input_shape=(32, 32, 3), num_classes=100, stem_stride=1, name=None):
    """The CIFAR VGG of the CRD benchmark (`vggN_bn`: BatchNorm, no FC layers).

    Five blocks of 3x3 conv (with bias, as in PyTorch) + BN + ReLU; 2x2 max
    pooling after the first three blocks (and after the fourth for 64x64
    inputs, as in the original), global average pooling and one linear
    layer. `config` is a key of `VGG_CONFIGS` or five tuples of widths.

    Example:

    >>> import keras
    >>> from keras_cskd.models import vgg
    >>> with keras.StatelessScope(initialize_variables=False):  # build without initialising
    ...     model = vgg("vgg8", input_shape=(28, 28, 1), num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    if isinstance(config, str):
        if config not in VGG_CONFIGS:
            raise ValueError(f"Unknown VGG config {config!r}; choose one of {sorted(VGG_CONFIGS)}.")
        name = name or config
        config = VGG_CONFIGS[config]
    if len(config) != 5:
        raise ValueError(f"A VGG config has 5 blocks, got {len(config)}.")
    _check_stride(stem_stride)
    inputs = keras.Input(input_shape)
    height = input_shape[0]
    x = inputs
    first = True
    for block, widths in enumerate(config):
        for index, width in enumerate(widths):
            prefix = f"block{block}_conv{index}"
            x = _conv(x, width, 3, stem_stride if first else 1, use_bias=True, name=prefix)
            first = False
            x = _bn(x, prefix + "_bn")
            x = _relu(x, prefix + "_relu")
        if block < 3 or (block == 3 and height == 64):
            x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.GlobalAveragePooling2D(name="pool4")(x)
    outputs = _classifier(x, num_classes, "normal")
    return keras.Model(inputs, outputs, name=name or "vgg")


def _vgg_factory(model_name):
    def build(input_shape=(32, 32, 3), num_classes=100, stem_stride=1):
        return vgg(model_name, input_shape, num_classes, stem_stride, model_name)

    build.__name__ = model_name
    build.__qualname__ = model_name
    build.__doc__ = (
        f"{model_name.upper()} with BatchNorm (CRD's `{model_name}` = `{model_name}_bn`); "
        "returns logits.\n\nSee `vgg` and the module docstring for the port's details."
    ) + _builder_example(model_name)
    return build


vgg8 = _vgg_factory("vgg8")
vgg11 = _vgg_factory("vgg11")
vgg13 = _vgg_factory("vgg13")
vgg16 = _vgg_factory("vgg16")
vgg19 = _vgg_factory("vgg19")


# -------------------------------------------------------------- MobileNetV2
# (expansion t, channels c, repeats n, stride s) of the CRD MobileNetV2.
MOBILENETV2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _inverted_residual(x, out_channels, strides, expansion, name):
    in_channels = x.shape[-1]
    hidden = in_channels * expansion
    # The CRD version keeps the 1x1 expansion conv even when expansion == 1.
    out = _conv(x, hidden, 1, name=name + "_expand")
    out = _relu(_bn(out, name + "_expand_bn"), name + "_expand_relu")
    out = _depthwise(out, strides, name=name + "_depthwise")
    out = _relu(_bn(out, name + "_depthwise_bn"), name + "_depthwise_relu")
    out = _conv(out, out_channels, 1, name=name + "_project")
    out = _bn(out, name + "_project_bn")
    if strides == 1 and in_channels == out_channels:
        out = layers.Add(name=name + "_add")([x, out])
    return out


def mobilenetv2(
    input_shape=(32, 32, 3),
    num_classes=100,
    stem_stride=2,
    width_multiplier=0.5,
    expansion=6,
    name="mobilenetv2",
):
    """MobileNetV2 of the CRD benchmark (`mobile_half`, "MobileNetV2" in
    mdistiller's tables): width multiplier 0.5, expansion 6, ReLU (not
    ReLU6), a 1280-channel last 1x1 conv, global average pooling, linear.

    Unlike the other zoo members the original stem conv has stride 2, so
    `stem_stride` defaults to 2 here (32x32 inputs end at 2x2 before
    pooling); the first inverted-residual stage keeps its 1x1 expansion conv
    even though its expansion is 1, as in the original.

    Example:

    >>> import keras
    >>> from keras_cskd.models import mobilenetv2
    >>> with keras.StatelessScope(initialize_variables=False):  # build without initialising
    ...     model = mobilenetv2(num_classes=100)
    >>> model.output_shape
    (None, 100)
    """
    _check_stride(stem_stride)
    inputs = keras.Input(input_shape)
    channels = int(32 * width_multiplier)
    x = _conv(inputs, channels, 3, stem_stride, name="conv1")
    x = _relu(_bn(x, "conv1_bn"), "conv1_relu")
    for stage, (t, c, n, s) in enumerate(MOBILENETV2_SETTING):
        t = 1 if stage == 0 else expansion
        out_channels = int(c * width_multiplier)
        for index in range(n):
            x = _inverted_residual(
                x, out_channels, s if index == 0 else 1, t, name=f"blocks{stage}_{index}"
            )
    last_channels = int(1280 * width_multiplier) if width_multiplier > 1.0 else 1280
    x = _conv(x, last_channels, 1, name="conv2")
    x = _relu(_bn(x, "conv2_bn"), "conv2_relu")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = _classifier(x, num_classes, "normal")
    return keras.Model(inputs, outputs, name=name)


# ------------------------------------------------------------- ShuffleNetV2
SHUFFLENETV2_CONFIGS = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


def _channel_shuffle(x, name, groups=2):
    """[.., C] -> [.., g, C/g] -> [.., C/g, g] -> [.., C], the channels-last
    form of the original's NCHW view/permute/reshape."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    x = layers.Reshape((height, width, groups, channels // groups), name=name + "_split_groups")(x)
    x = layers.Permute((1, 2, 4, 3), name=name + "_transpose")(x)
    return layers.Reshape((height, width, channels), name=name + "_shuffle")(x)


def _shuffle_basic_block(x, name):
    channels = x.shape[-1]
    half = channels // 2
    # The split is a slice of the KerasTensor (recorded as a keras.ops op).
    kept, branch = x[..., :half], x[..., half:]
    out = _conv(branch, half, 1, init="torch", name=name + "_conv1")
    out = _relu(_bn(out, name + "_bn1"), name + "_relu1")
    out = _depthwise(out, 1, init="torch", name=name + "_conv2")
    out = _bn(out, name + "_bn2")
    out = _conv(out, half, 1, init="torch", name=name + "_conv3")
    out = _relu(_bn(out, name + "_bn3"), name + "_relu3")
    out = layers.Concatenate(name=name + "_concat")([kept, out])
    return _channel_shuffle(out, name)


def _shuffle_down_block(x, out_channels, name):
    mid = out_channels // 2
    left = _depthwise(x, 2, init="torch", name=name + "_conv1")
    left = _bn(left, name + "_bn1")
    left = _conv(left, mid, 1, init="torch", name=name + "_conv2")
    left = _relu(_bn(left, name + "_bn2"), name + "_relu2")
    right = _conv(x, mid, 1, init="torch", name=name + "_conv3")
    right = _relu(_bn(right, name + "_bn3"), name + "_relu3")
    right = _depthwise(right, 2, init="torch", name=name + "_conv4")
    right = _bn(right, name + "_bn4")
    right = _conv(right, mid, 1, init="torch", name=name + "_conv5")
    right = _relu(_bn(right, name + "_bn5"), name + "_relu5")
    out = layers.Concatenate(name=name + "_concat")([left, right])
    return _channel_shuffle(out, name)


def shufflenetv2(
    input_shape=(32, 32, 3),
    num_classes=100,
    stem_stride=1,
    net_size=1.0,
    name="shufflenetv2",
):
    """ShuffleNetV2 of the CRD benchmark (`ShuffleV2`, net size 1).

    A 1x1 stem conv (24 channels, no max pooling: the CIFAR variant), three
    stages of a stride-2 down block followed by 3, 7, 3 basic blocks (channel
    split, channel shuffle with 2 groups), a 1x1 conv to 1024 channels,
    global average pooling and a linear layer. All layers use PyTorch's
    default initialisation, as the original does.

    Example:

    >>> import keras
    >>> from keras_cskd.models import shufflenetv2
    >>> with keras.StatelessScope(initialize_variables=False):  # build without initialising
    ...     model = shufflenetv2(num_classes=100)
    >>> model.output_shape
    (None, 100)
    """
    if net_size not in SHUFFLENETV2_CONFIGS:
        raise ValueError(
            f"net_size must be one of {sorted(SHUFFLENETV2_CONFIGS)}, got {net_size!r}."
        )
    _check_stride(stem_stride)
    out_channels, num_blocks = SHUFFLENETV2_CONFIGS[net_size]
    inputs = keras.Input(input_shape)
    x = _conv(inputs, 24, 1, stem_stride, init="torch", name="conv1")
    x = _relu(_bn(x, "bn1"), "relu1")
    for stage, (channels, blocks) in enumerate(
        zip(out_channels[:3], num_blocks, strict=True), start=1
    ):
        x = _shuffle_down_block(x, channels, name=f"layer{stage}_down")
        for index in range(blocks):
            x = _shuffle_basic_block(x, name=f"layer{stage}_block{index}")
    x = _conv(x, out_channels[3], 1, init="torch", name="conv2")
    x = _relu(_bn(x, "bn2"), "relu2")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = _classifier(x, num_classes, "torch")
    return keras.Model(inputs, outputs, name=name)
