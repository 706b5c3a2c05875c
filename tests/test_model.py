"""Tests for nsa_tutorial.model: shapes, parameter count against the layer list, activations."""

import pytest
import torch

from nsa_tutorial.config import get_config
from nsa_tutorial.model import (STRIDE, NSAModel, build_model, count_parameters,
                                shapes_through)


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def bn(c: int) -> int:
    return 2 * c  # weight and bias; running statistics are buffers, not parameters


def expected_parameters(in_channels: int) -> int:
    """Parameter count derived by hand from the layers: the ResNet-18 encoder and the decoder's blocks."""
    total = conv(in_channels, 64, 7) + bn(64)  # ResNet-18 stem
    for c_in, c_out in [(64, 64), (64, 128), (128, 256), (256, 512)]:  # layer1..layer4
        total += conv(c_in, c_out, 3) + bn(c_out) + conv(c_out, c_out, 3) + bn(c_out)
        if c_in != c_out:
            total += conv(c_in, c_out, 1) + bn(c_out)  # downsampling shortcut
        total += 2 * (conv(c_out, c_out, 3) + bn(c_out))  # second basic block
    total += conv(512, 256, 1) + conv(256, 128, 1)  # bottleneck, no bias
    for c_in, c_out in [(128, 64), (64, 32), (32, 16)]:  # transposed basic blocks
        total += conv(c_in, c_out, 3) + bn(c_out) + conv(c_out, c_out, 3) + bn(c_out)
        total += conv(c_in, c_out, 1) + bn(c_out)
    return total + conv(16, 1, 7) + 1  # head with its bias


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return NSAModel()


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_output_has_input_size(model, size):
    x = torch.randn(2, 3, *size)
    assert model(x).shape == (2, 1, *size)


def test_parameter_count_matches_layer_list(model):
    n = count_parameters(model)
    assert n == expected_parameters(3)
    assert 11.0e6 <= n <= 12.0e6
    assert count_parameters(NSAModel(in_channels=1)) == expected_parameters(1)


def test_sigmoid_output_is_a_probability(model):
    torch.manual_seed(1)
    y = model.eval()(torch.randn(2, 3, 64, 64))
    assert y.dtype == torch.float32
    assert (y > 0).all() and (y < 1).all()


def test_relu_output_is_clipped_at_zero():
    torch.manual_seed(0)
    relu_model, sigmoid_model = NSAModel(activation="relu"), NSAModel(activation="sigmoid")
    sigmoid_model.load_state_dict(relu_model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # train-mode BatchNorm: batch statistics give logits of both signs
        y = relu_model(x)
        probability = sigmoid_model(x)
    # Same weights: ReLU output is zero exactly where the sigmoid is below 1/2, logit elsewhere.
    assert y.min() == 0 and y.max() > 0
    assert torch.equal(y == 0, probability <= 0.5)
    positive = probability > 0.5
    assert torch.allclose(torch.sigmoid(y[positive]), probability[positive])


@pytest.mark.parametrize("shape", [(1, 3, 100, 100), (1, 3, 64, 48), (1, 1, 64, 64), (3, 64, 64)])
def test_bad_input_is_rejected(model, shape):
    with pytest.raises(ValueError, match="multiples of 32|channels|4-d"):
        model(torch.zeros(shape))


def test_message_names_the_stride(model):
    with pytest.raises(ValueError, match=f"multiples of {STRIDE}"):
        model(torch.zeros(1, 3, 100, 100))


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation"):
        NSAModel(activation="tanh")


def test_shapes_through_follows_the_architecture(model):
    x = torch.randn(1, 3, 64, 96)
    shapes = dict(shapes_through(model, x))
    h, w = 64, 96
    assert shapes["input"] == (1, 3, h, w)
    assert shapes["encoder.layer4"] == (1, 512, h // STRIDE, w // STRIDE)
    assert shapes["bottleneck"] == (1, 128, h // STRIDE, w // STRIDE)
    for i, channels in enumerate([64, 32, 16], start=1):  # each block doubles the resolution
        assert shapes[f"decoder.block{i}"] == (1, channels, 2**i * h // STRIDE, 2**i * w // STRIDE)
    assert shapes["decoder.upsample"] == (1, 16, h // 2, w // 2)
    assert shapes["activation"] == (1, 1, h, w)
    assert list(shapes)[1:] == [name for name, _ in model.stages()]


def test_shapes_through_leaves_batchnorm_statistics_alone():
    model = NSAModel().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shapes_through(model, torch.randn(2, 3, 64, 64))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_build_model_picks_the_activation_from_the_loss():
    continuous = get_config("bottle", label="continuous")
    logistic = get_config("bottle", label="logistic")
    assert continuous.loss == "mse" and build_model(continuous).activation.name == "relu"
    assert logistic.loss == "bce" and build_model(logistic).activation.name == "sigmoid"
    assert build_model(logistic).in_channels == 3
    with pytest.raises(ValueError, match="Config"):
        build_model({"loss": "bce"})
