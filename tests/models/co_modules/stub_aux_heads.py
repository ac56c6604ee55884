"""Small aux heads that obey the aux-head contract, for testing the collaborative wiring.

``loss(pyramid, data_samples) -> (raw losses, AuxPositives)``: every pyramid level feeds the
losses (so the adapter's extra level gets a gradient); the positives are the GT boxes moved by
2 px, with the level-0 feature at each box centre, padded with fixed background boxes.
``predict`` returns one fixed box per image scored by the head. ``explode=True`` makes both
methods raise, to show when a head must not run.
"""
from __future__ import annotations

import torch
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.models.co_modules import AuxPositives, select_positives
from codetr.registry import MODELS

# Background candidates of every image, xyxy pixels.
NEGATIVES = torch.tensor([[0., 0., 8., 8.], [8., 8., 24., 24.], [2., 20., 30., 40.]])
PREDICTED_BOX = torch.tensor([[4., 4., 20., 16.]])


@MODELS.register_module()
class StubOneStageAuxHead(BaseModule):
    """Contract-abiding stand-in for CoATSSHead-like heads."""

    eval_kind = 'one-stage'

    def __init__(self, num_classes: int, in_channels: int, num_levels: int,
                 explode: bool = False, train_cfg: dict | None = None,
                 test_cfg: dict | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_levels = num_levels
        self.explode = explode
        self.train_cfg, self.test_cfg = train_cfg, test_cfg
        self.cls = nn.Conv2d(in_channels, num_classes, 1)
        self.reg = nn.Conv2d(in_channels, 4, 1)
        self.last_raw: dict[str, Tensor] = {}

    def loss(self, pyramid: list[Tensor], data_samples: list) -> tuple[dict, AuxPositives]:
        if self.explode:
            raise RuntimeError(f'{type(self).__name__}.loss must not run here')
        assert len(pyramid) == self.num_levels, (len(pyramid), self.num_levels)
        losses = dict(loss_cls=sum(self.cls(p).sigmoid().mean() for p in pyramid),
                      loss_bbox=sum(self.reg(p).abs().mean() for p in pyramid))
        self.last_raw = {k: v.detach().clone() for k, v in losses.items()}
        return losses, self._positives(pyramid[0], data_samples)

    def _positives(self, level0: Tensor, data_samples: list) -> AuxPositives:
        stride = data_samples[0].metainfo['batch_input_shape'][0] / level0.shape[-2]
        coords, labels, targets, feats = [], [], [], []
        for i, sample in enumerate(data_samples):
            gt = sample.gt_instances
            boxes = torch.cat([gt.bboxes + 2.0, NEGATIVES.to(level0)])
            coords.append(boxes)
            targets.append(torch.cat([gt.bboxes, NEGATIVES.to(level0)]))
            labels.append(torch.cat([gt.labels, gt.labels.new_full((3,), self.num_classes)]))
            centres = ((boxes[:, :2] + boxes[:, 2:]) / 2 / stride).long()
            ys = centres[:, 1].clamp(0, level0.shape[-2] - 1)
            xs = centres[:, 0].clamp(0, level0.shape[-1] - 1)
            feats.append(level0[i, :, ys, xs].t())  # [N, C]
        return select_positives(coords, labels, targets, self.num_classes, feats=feats)

    def predict(self, pyramid: list[Tensor], data_samples: list,
                rescale: bool = True) -> list[InstanceData]:
        if self.explode:
            raise RuntimeError(f'{type(self).__name__}.predict must not run here')
        results = []
        for i, sample in enumerate(data_samples):
            box = PREDICTED_BOX.to(pyramid[0])
            if rescale:
                box = box / box.new_tensor(sample.metainfo['scale_factor']).repeat(2)
            score = self.cls(pyramid[-1][i:i + 1]).sigmoid().amax().reshape(1)
            results.append(InstanceData(bboxes=box, scores=score,
                                        labels=torch.zeros(1, dtype=torch.long)))
        return results


@MODELS.register_module()
class StubTwoStageAuxHead(StubOneStageAuxHead):
    """The same stand-in declared as a Faster R-CNN-like head."""

    eval_kind = 'two-stage'
