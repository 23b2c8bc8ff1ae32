"""textvision.embed.int8: int8 linear layers against float32, fused layers against separate ones."""

import pytest
import torch

from textvision.embed.int8 import Int8Linear, float_linears, quantize_linears


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return torch.nn.Linear(64, 48)


def test_int8_linear_is_close_to_float32(linear):
    x = torch.randn(5, 7, 64)
    exact = linear(x)
    int8 = Int8Linear.from_float(linear)
    assert int8.values.dtype == torch.int8 and int8(x).shape == exact.shape
    rest = int8(x)[:, 1:]
    error = (rest - exact[:, 1:]).norm() / exact[:, 1:].norm()
    assert 1e-5 < error < 0.02  # rounded (not float32 in disguise), and close


def test_the_first_position_of_each_sequence_is_float32(linear):
    x = torch.randn(3, 5, 64)
    int8 = Int8Linear.from_float(linear)
    expected = torch.nn.functional.linear(x[:, 0], linear.weight, linear.bias)
    assert torch.equal(int8(x)[:, 0], expected)
    assert not torch.equal(int8(x[:, 0]), expected)  # rows of a matrix: all in int8


def test_each_row_is_quantised_on_its_own(linear):
    """A row's result does not depend on the other rows of the batch (per-row scales)."""
    int8 = Int8Linear.from_float(linear)
    x = torch.randn(4, 64)
    big = torch.cat([x, 1000 * torch.randn(1, 64)])
    assert torch.equal(int8(big)[:4], int8(x))


def test_side_by_side_layers_give_the_same_numbers_as_separate_ones():
    torch.manual_seed(1)
    parts = [Int8Linear.from_float(torch.nn.Linear(32, n)) for n in (8, 16, 4)]
    fused = Int8Linear.concat(parts)
    x = torch.randn(2, 3, 32)
    fused, apart = fused(x), torch.cat([part(x) for part in parts], dim=-1)
    assert torch.equal(fused[:, 1:], apart[:, 1:])  # int8: exact
    torch.testing.assert_close(fused[:, 0], apart[:, 0])  # float32: up to summation order


def test_quantize_linears_replaces_every_linear_in_place():
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Sequential(torch.nn.Linear(8, 2))
    )
    assert quantize_linears(model) is model
    kinds = [type(m) for m in model.modules()]
    assert torch.nn.Linear not in kinds and kinds.count(Int8Linear) == 2
    assert model(torch.randn(3, 8)).shape == (3, 2)


def test_float_linears_gives_back_the_float32_model_as_a_copy():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 8)
    expected = model(x)
    int8 = quantize_linears(model)
    restored = float_linears(int8)
    assert torch.equal(restored(x), expected) and isinstance(int8[0], Int8Linear)
    assert [type(m) for m in restored.modules()].count(torch.nn.Linear) == 2
