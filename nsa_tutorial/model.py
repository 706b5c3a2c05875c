"""The NSA network: a ResNet-18 encoder and a mirrored decoder, without skip connections.

Book chapter: *The model*.

The encoder is torchvision's ResNet-18 (random initialisation) up to ``layer4``:
512 channels at 1/32 of the input size.  A 1x1 bottleneck (512 -> 256 -> 128)
squeezes the code, three *transposed basic blocks* double the resolution each
(128 -> 64 -> 32 -> 16 channels), a bilinear upsampling and a final 7x7
transposed convolution restore the input size with one output channel.  The
output activation is a sigmoid for bounded labels (binary, logistic; BCE loss,
paper eq. 15) and a ReLU for continuous labels (MSE loss, eq. 16).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn

from nsa_tutorial.config import Config

#: The encoder halves the resolution five times, so input sides must be multiples of this.
STRIDE = 32
ACTIVATIONS = ("sigmoid", "relu")


class TransposedBasicBlock(nn.Module):
    """ResNet's basic block run backwards: doubles height and width, changes the channels.

    Main path: 3x3 transposed conv (stride 2) + BN + ReLU + 3x3 conv + BN; shortcut:
    1x1 transposed conv (stride 2) + BN; the sum goes through a ReLU.
    Book chapter: *The model*.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # No conv biases: every convolution is followed by a BatchNorm, whose shift replaces them.
        self.main = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                               output_padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 1, stride=2, output_padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.main(x) + self.shortcut(x))


class OutputActivation(nn.Module):
    """Sigmoid (bounded labels, eq. 15) or ReLU (continuous labels, eq. 16), computed in float32.

    Under mixed precision the decoder runs in 16 bit; casting first keeps
    probabilities near 0 and 1 distinguishable and gives the loss float32 input.
    Book chapter: *The model*.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return torch.sigmoid(x) if self.name == "sigmoid" else torch.relu(x)

    def extra_repr(self) -> str:
        return self.name


def _encoder(in_channels: int) -> nn.Sequential:
    resnet = torchvision.models.resnet18(weights=None)
    if in_channels != 3:
        resnet.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
    return nn.Sequential(OrderedDict(stem=stem, layer1=resnet.layer1, layer2=resnet.layer2,
                                     layer3=resnet.layer3, layer4=resnet.layer4))


def _decoder() -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        block1=TransposedBasicBlock(128, 64),
        block2=TransposedBasicBlock(64, 32),
        block3=TransposedBasicBlock(32, 16),
        upsample=nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        head=nn.ConvTranspose2d(16, 1, 7, stride=2, padding=3, output_padding=1),
    ))


class NSAModel(nn.Module):
    """The NSA encoder-decoder: ``(B, C, H, W)`` images to ``(B, 1, H, W)`` anomaly maps.

    ``H`` and ``W`` must be multiples of 32.  About 11.5 M parameters for RGB input.
    Book chapter: *The model*.

    >>> NSAModel()(torch.zeros(2, 3, 64, 96)).shape
    torch.Size([2, 1, 64, 96])
    """

    def __init__(self, in_channels: int = 3, activation: str = "sigmoid") -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        self.in_channels = in_channels
        self.encoder = _encoder(in_channels)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(512, 256, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(256, 128, 1, bias=False), nn.ReLU(inplace=True),
        )
        self.decoder = _decoder()
        self.activation = OutputActivation(activation)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The network as named stages, in the order ``forward`` applies them."""
        return [*((f"encoder.{n}", m) for n, m in self.encoder.named_children()),
                ("bottleneck", self.bottleneck),
                *((f"decoder.{n}", m) for n, m in self.decoder.named_children()),
                ("activation", self.activation)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels)
        for _, stage in self.stages():
            x = stage(x)
        return x


def _check_input(x: torch.Tensor, in_channels: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"expected a 4-d tensor (batch, channels, height, width), got "
                         f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels, got {x.shape[1]}")
    h, w = x.shape[-2:]
    if h % STRIDE or w % STRIDE or h == 0 or w == 0:
        raise ValueError(f"height and width must be positive multiples of {STRIDE} (the encoder's "
                         f"stride), got {h}x{w}; resize or crop the input")


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``. Book chapter: *The model*."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters())


def shapes_through(model: NSAModel, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """``(stage name, output shape)`` for the input and after every stage.

    Runs in eval mode without gradients, so BatchNorm statistics stay untouched.
    Book chapter: *The model*.
    """
    if not isinstance(model, NSAModel):
        raise ValueError(f"expected an NSAModel, got {type(model).__name__}")
    _check_input(x, model.in_channels)
    was_training = model.training
    model.eval()
    shapes = [("input", tuple(x.shape))]
    with torch.no_grad():
        for name, stage in model.stages():
            x = stage(x)
            shapes.append((name, tuple(x.shape)))
    model.train(was_training)
    return shapes


def build_model(config: Config) -> NSAModel:
    """The model for a run: ReLU output for the MSE loss (continuous labels), else sigmoid.

    All data is loaded as RGB (grey images as three equal channels), so ``in_channels=3``.
    Book chapter: *The model*.
    """
    if not isinstance(config, Config):
        raise ValueError(f"expected a nsa_tutorial.config.Config, got {type(config).__name__}")
    return NSAModel(in_channels=3, activation="relu" if config.loss == "mse" else "sigmoid")
