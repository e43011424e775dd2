"""The raw PyTorch peer of `step_time.py`: a plain eager KD step.

What most knowledge-distillation code does (mdistiller-style): the teacher in
`eval()` mode under `torch.no_grad()`, the student's forward pass, cross-entropy
plus Hinton's KD loss (`tau^2 * KL(p_t || p_s)`, batch mean), `backward()`, an
SGD step. No Keras, no compilation. The two pairs of `step_time.py` are
written here in `torch.nn` with the same layer shapes, so their parameter
counts equal `keras_cskd.models.count_parameters` of the Keras models
(checked by `tests/test_benchmarks.py` and printed by `step_time.py`):

- `mlp`: Flatten, Linear + ReLU per hidden layer, Linear to the classes;
- `resnet`: the CIFAR ResNet of the CRD benchmark (basic blocks, 3x3 stem,
  three stages with strides 1, 2, 2, 1x1-conv + BN projection shortcuts,
  global average pooling, linear classifier), `resnet8x4` and `resnet32x4`
  with stage widths (32, 64, 128, 256).

Example:

>>> import torch
>>> teacher, student = build_pair("mlp", num_classes=10, input_shape=(8, 8, 1))
>>> step = KDStep(teacher, student, torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
>>> loss = step.run(2)  # two training steps, then one host sync
>>> loss > 0
True
"""

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

# Architectures of the two pairs, as in keras_cskd.models and step_time.py.
MLP_HIDDEN = {"teacher": (1024, 1024), "student": (256,)}
RESNET = {"teacher": (32, (32, 64, 128, 256)), "student": (8, (32, 64, 128, 256))}


def mlp(input_shape, num_classes, hidden):
    """`keras_cskd.models.mlp` in `torch.nn` (Flatten, Linear + ReLU, Linear)."""
    features = 1
    for size in input_shape:
        features *= size
    layers = [nn.Flatten()]
    for units in hidden:
        layers += [nn.Linear(features, units), nn.ReLU()]
        features = units
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, projection shortcut where the shape changes."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """`keras_cskd.models.resnet(depth, filters)` in `torch.nn` (NCHW)."""

    def __init__(self, depth, filters, num_classes, in_channels=3):
        super().__init__()
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, filters[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(filters[0]),
            nn.ReLU(),
        )
        stages, in_planes = [], filters[0]
        for planes, stride in zip(filters[1:], (1, 2, 2), strict=True):
            for index in range(blocks):
                stages.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_pair(pair, num_classes, input_shape=(32, 32, 3)):
    """(teacher, student) `nn.Module`s of `step_time.py`'s `pair`
    ("mlp" or "resnet"); `input_shape` is Keras' (H, W, C)."""
    if pair == "mlp":
        return tuple(mlp(input_shape, num_classes, MLP_HIDDEN[role]) for role in MLP_HIDDEN)
    return tuple(
        CifarResNet(*RESNET[role], num_classes, in_channels=input_shape[-1]) for role in RESNET
    )


def count_parameters(module):
    """PyTorch's usual count: `sum(p.numel() for p in module.parameters())`."""
    return sum(p.numel() for p in module.parameters())


def kd_loss(teacher_logits, student_logits, temperature):
    """Hinton's KD loss, batch mean: `tau^2 * KL(softmax(t/tau) || softmax(s/tau))`."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(on):
    """Autocast to bfloat16 is available on CPU and on CUDA devices with bf16."""
    if on.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return on.type == "cpu"


class KDStep:
    """One eager KD training step, the way plain PyTorch KD code writes it.

    Args:
        teacher, student: `nn.Module`s (moved to `x`'s device).
        x: a fixed input batch, NCHW; y: its integer labels.
        temperature: KD temperature (4, as in `step_time.py`).
        precision: "fp32", or "bf16" for `torch.autocast(dtype=bfloat16)`
            around the forward passes and the loss (the optimizer step and
            the weights stay float32).
    """

    def __init__(self, teacher, student, x, y, temperature=4.0, precision="fp32"):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}.")
        on = x.device
        if precision == "bf16" and not bf16_supported(on):
            raise ValueError(f"bf16 autocast is not supported on {on}; use precision='fp32'.")
        self.teacher = teacher.to(on).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.student = student.to(on).train()
        self.x, self.y = x, y
        self.temperature = float(temperature)
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=0.05, momentum=0.9)
        if precision == "bf16":
            self.autocast = lambda: torch.autocast(on.type, dtype=torch.bfloat16)
        else:
            self.autocast = contextlib.nullcontext

    def step(self):
        with self.autocast():
            with torch.no_grad():
                teacher_logits = self.teacher(self.x)
            student_logits = self.student(self.x)
            loss = F.cross_entropy(student_logits, self.y) + kd_loss(
                teacher_logits.float(), student_logits.float(), self.temperature
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def run(self, steps):
        """`steps` training steps, then one host sync; returns the last loss."""
        loss = None
        for _ in range(steps):
            loss = self.step()
        return float(loss.detach())  # .item(): waits for the device, once per block
