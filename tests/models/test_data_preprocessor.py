import pytest
import torch

from codetr.models.data_preprocessors import BatchFixedSizePad, DetDataPreprocessor
from codetr.registry import MODELS
from codetr.structures import DetDataSample

MEAN, STD = (1.0, 2.0, 3.0), (2.0, 4.0, 5.0)


def batch(*shapes: tuple[int, int], fill: int = 0) -> dict:
    inputs = [torch.full((3, h, w), fill, dtype=torch.uint8) for h, w in shapes]
    samples = [DetDataSample(metainfo=dict(img_shape=(h, w))) for h, w in shapes]
    return dict(inputs=inputs, data_samples=samples)


def test_normalises_one_pixel_by_hand_with_bgr_to_rgb():
    data = batch((2, 2))
    data['inputs'][0][:, 1, 0] = torch.tensor([10, 20, 30], dtype=torch.uint8)  # B, G, R
    pre = DetDataPreprocessor(mean=MEAN, std=STD, bgr_to_rgb=True)
    out = pre(data)['inputs']
    # RGB = (30, 20, 10) -> ((30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 5)
    assert out[0, :, 1, 0].tolist() == pytest.approx([14.5, 4.5, 1.4])
    assert out.dtype == torch.float32
    plain = DetDataPreprocessor(mean=MEAN, std=STD)(batch((2, 2), fill=10))['inputs']
    assert plain[0, :, 0, 0].tolist() == pytest.approx([4.5, 2.0, 7 / 5])


def test_pads_to_divisor_after_normalising_and_stamps_metainfo():
    pre = DetDataPreprocessor(mean=MEAN, std=STD, pad_size_divisor=8, pad_value=-7)
    out = pre(batch((10, 13), (7, 20), fill=11))
    inputs, samples = out['inputs'], out['data_samples']
    assert inputs.shape == (2, 3, 16, 24)
    assert inputs[0, 0, :10, :13].eq(5.0).all()      # (11 - 1) / 2 inside the image
    assert inputs[0, :, 10:].eq(-7).all() and inputs[1, :, :, 20:].eq(-7).all()
    assert [s.batch_input_shape for s in samples] == [(16, 24), (16, 24)]
    assert [s.pad_shape for s in samples] == [(16, 16), (8, 24)]
    assert samples[0].img_shape == (10, 13)           # the pipeline's fields stay


def test_batch_fixed_size_pad_shape_value_and_metainfo():
    pad = BatchFixedSizePad(size=(32, 40), img_pad_value=0.5)
    inputs = torch.ones(2, 3, 20, 24)
    samples = [DetDataSample(), DetDataSample()]
    out, samples = pad(inputs, samples)
    assert out.shape == (2, 3, 32, 40)
    assert out[:, :, :20, :24].eq(1).all()
    assert out[:, :, 20:].eq(0.5).all() and out[:, :, :, 24:].eq(0.5).all()
    assert all(s.batch_input_shape == (32, 40) and s.pad_shape == (32, 40) for s in samples)
    big = torch.ones(1, 3, 40, 48)
    assert pad(big, None)[0] is big


def test_batch_augments_built_from_config_run_in_training_only():
    pre = MODELS.build(dict(
        type='DetDataPreprocessor', mean=MEAN, std=STD, bgr_to_rgb=True,
        batch_augments=[dict(type='BatchFixedSizePad', size=(16, 16))]))
    assert isinstance(pre.batch_augments[0], BatchFixedSizePad)
    train = pre(batch((5, 7), (6, 4)), training=True)
    assert train['inputs'].shape == (2, 3, 16, 16)
    assert train['data_samples'][1].batch_input_shape == (16, 16)
    test = pre(batch((5, 7), (6, 4)), training=False)
    assert test['inputs'].shape == (2, 3, 6, 7)
    assert test['data_samples'][0].pad_shape == (5, 7)


def test_lsj_pipeline_padding_survives_normalisation():
    # LSJ pads in the pipeline with raw 114; the batch pad then has nothing to do.
    pre = DetDataPreprocessor(mean=MEAN, std=STD,
                              batch_augments=[dict(type='BatchFixedSizePad', size=(8, 8))])
    out = pre(batch((8, 8), fill=114), training=True)['inputs']
    assert out[0, :, 7, 7].tolist() == pytest.approx([(114 - 1) / 2, (114 - 2) / 4, (114 - 3) / 5])


def test_stacked_tensor_inputs_and_no_samples():
    pre = DetDataPreprocessor(mean=MEAN, std=STD, pad_size_divisor=4)
    out = pre(dict(inputs=torch.zeros(2, 3, 5, 6, dtype=torch.uint8)))
    assert out['inputs'].shape == (2, 3, 8, 8) and out['data_samples'] is None
