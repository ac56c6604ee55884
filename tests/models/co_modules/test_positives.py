import torch

from codetr.models.co_modules import AuxPositives, select_positives

NUM_CLASSES = 5


def _image(num_pos: int, num_neg: int, offset: float = 0.0):
    n = num_pos + num_neg
    coords = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 4) + offset
    coords[:, 2:] += 10
    labels = torch.full((n,), NUM_CLASSES)
    labels[:num_pos] = torch.arange(num_pos) % NUM_CLASSES
    targets = coords + 1
    feats = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)
    return coords, labels, targets, feats


def test_few_positives_pad_to_nine_with_same_head_negatives():
    images = [_image(2, 20), _image(4, 20, offset=100.)]
    out = select_positives(*[list(x) for x in zip(*[im[:3] for im in images])], NUM_CLASSES,
                           feats=[im[3] for im in images])
    assert isinstance(out, AuxPositives)
    assert out.coords.shape == (2, 9, 4) and out.feats.shape == (2, 9, 3)
    # image 0: 2 positives first, then 7 background negatives drawn from its own candidates
    assert out.labels[0, :2].tolist() == [0, 1]
    assert (out.labels[0, 2:] == NUM_CLASSES).all()
    assert out.bbox_weights[0].tolist() == [1.] * 2 + [0.] * 7
    assert out.label_weights.tolist() == [[1.] * 9, [1.] * 9]
    assert out.bbox_weights[1].sum() == 4
    # padding boxes are real negatives of that image (their coords exist among its candidates)
    assert (out.coords[1, 4:, 0] >= 100 + 4).all()
    torch.testing.assert_close(out.targets, out.coords + 1)


def test_many_positives_are_subsampled_to_the_cap():
    torch.manual_seed(0)
    coords, labels, targets, _ = _image(500, 10)
    out = select_positives([coords], [labels], [targets], NUM_CLASSES, max_pos_coords=300)
    assert out.coords.shape == (1, 300, 4)
    assert (out.labels < NUM_CLASSES).all() and out.bbox_weights.sum() == 300
    assert len(set(out.coords[0, :, 0].tolist())) == 300  # no duplicates


def test_m_is_the_largest_count_in_the_batch():
    a, b = _image(12, 30), _image(3, 30)
    out = select_positives([a[0], b[0]], [a[1], b[1]], [a[2], b[2]], NUM_CLASSES)
    assert out.num_queries == 12
    assert out.bbox_weights.sum(1).tolist() == [12., 3.]


def test_ignored_candidates_are_never_picked_and_shortfall_is_zero_weighted():
    coords, labels, targets, _ = _image(1, 3)
    labels[1:] = -1  # ignored: neither positive nor negative
    labels[3] = NUM_CLASSES
    out = select_positives([coords], [labels], [targets], NUM_CLASSES)
    assert out.labels[0].tolist() == [0, NUM_CLASSES] + [NUM_CLASSES] * 7
    assert out.label_weights[0].tolist() == [1., 1.] + [0.] * 7
    assert out.bbox_weights[0].tolist() == [1.] + [0.] * 8
    assert (out.coords[0, 2:] == 0).all()
