"""SinePositionalEncoding: values checked by hand at single positions, padding behaviour."""
import math

import pytest
import torch

from codetr.models.layers.positional_encoding import SinePositionalEncoding
from codetr.registry import MODELS


def _mask_3x4_right_padded() -> torch.Tensor:
    """One image of 3 x 3 valid pixels padded to 3 x 4 (last column is padding)."""
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[:, :, 3] = True
    return mask


def _expected(y: float, x: float, dim_t: list[float]) -> torch.Tensor:
    """Channels for positions (y, x) with frequencies dim_t: [sin, cos, sin, cos...] y then x."""
    feats = []
    for value in (y, x):
        for k, t in enumerate(dim_t):
            feats.append(math.sin(value / t) if k % 2 == 0 else math.cos(value / t))
    return torch.tensor(feats)


def test_unnormalised_counts_pixels_from_one():
    enc = SinePositionalEncoding(num_feats=4, temperature=100)
    pos = enc(_mask_3x4_right_padded())
    assert pos.shape == (1, 8, 3, 4)
    # dim_t = 100 ** (2 * (i // 2) / 4) = [1, 1, 10, 10]; pixel (row 1, col 2): y = 2, x = 3.
    torch.testing.assert_close(pos[0, :, 1, 2], _expected(2.0, 3.0, [1, 1, 10, 10]))


def test_normalised_divides_by_valid_size_and_applies_offset():
    enc = MODELS.build(dict(type='SinePositionalEncoding', num_feats=4, temperature=100,
                            normalize=True, offset=-0.5))
    pos = enc(_mask_3x4_right_padded())
    eps, two_pi = 1e-6, 2 * math.pi
    # Valid size is 3 x 3 (the padded column does not count): y = (2 - .5) / 3, x = (3 - .5) / 3.
    y = (2 - 0.5) / (3 + eps) * two_pi
    x = (3 - 0.5) / (3 + eps) * two_pi
    torch.testing.assert_close(pos[0, :, 1, 2], _expected(y, x, [1, 1, 10, 10]))


def test_normalised_without_offset_reaches_scale_at_last_valid_pixel():
    enc = SinePositionalEncoding(num_feats=2, temperature=20, normalize=True)
    pos = enc(torch.zeros(1, 2, 5, dtype=torch.bool))
    # Bottom-right pixel: y = x = 2 * pi (up to eps), so sin ~ 0 and cos ~ 1 for both axes.
    torch.testing.assert_close(pos[0, :, 1, 4], torch.tensor([0.0, 1.0, 0.0, 1.0]),
                               atol=1e-5, rtol=0)


def test_padding_does_not_move_real_pixels_and_fully_padded_column_is_zero_position():
    enc = SinePositionalEncoding(num_feats=8, normalize=True)
    padded = enc(_mask_3x4_right_padded())
    unpadded = enc(torch.zeros(1, 3, 3, dtype=torch.bool))
    torch.testing.assert_close(padded[..., :3], unpadded)
    # In the padded column no valid pixel is counted along y: y = 0 gives sin 0, cos 1.
    y_channels = padded[0, :8, :, 3]
    torch.testing.assert_close(y_channels[0::2], torch.zeros(4, 3))
    torch.testing.assert_close(y_channels[1::2], torch.ones(4, 3))


def test_batch_items_are_independent():
    enc = SinePositionalEncoding(num_feats=8, normalize=True)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[1, 2:, :] = True
    pos = enc(mask)
    torch.testing.assert_close(pos[0], enc(mask[:1])[0])
    torch.testing.assert_close(pos[1], enc(mask[1:])[0])
    assert not torch.allclose(pos[0], pos[1])


def test_odd_num_feats_is_rejected():
    with pytest.raises(ValueError, match='even'):
        SinePositionalEncoding(num_feats=3)
