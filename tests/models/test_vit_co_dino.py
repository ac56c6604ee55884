"""A tiny Co-DINO of the ViT-L recipe (EVA-02 ViT with windows and a global block, SFP,
Shared4Conv1FC RoI head, ATSS) trains a step with every parameter learning, and a whole
official-layout checkpoint of it converts through ``convert_official``."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from codetr.models.converters import convert_official, official_head_order
from codetr.registry import MODELS
from tests.models.test_co_detr import make_batch
from tests.test_official_parity import _to_official

from .official_vit_reference import OfficialViTConfig, official_state

ROOT = Path(__file__).resolve().parents[2]
EMBED, LEVELS, CLASSES = 32, 5, 4
VIT = OfficialViTConfig(embed_dim=32, depth=3, num_heads=2, window_size=4,
                        window_block_indexes=(0, 1), pretrain_img_size=64)  # block 2 global
deform_attn = dict(embed_dims=EMBED, num_heads=2, num_levels=LEVELS, num_points=2, dropout=0.0)
ffn = dict(embed_dims=EMBED, feedforward_channels=64, ffn_drop=0.0)
gn = dict(type='GN', num_groups=8)
TINY = dict(
    num_classes=CLASSES,  # every head takes it
    backbone=dict(embed_dim=VIT.embed_dim, depth=VIT.depth, num_heads=VIT.num_heads,
                  window_size=VIT.window_size, window_block_indexes=VIT.window_block_indexes,
                  pretrain_img_size=VIT.pretrain_img_size),
    neck=dict(in_channels=VIT.embed_dim, out_channels=EMBED, with_cp=True),
    query_head=dict(
        embed_dims=EMBED, num_queries=10,
        transformer=dict(
            encoder=dict(num_layers=1, num_cp=1, layer_cfg=dict(self_attn_cfg=deform_attn,
                                                                ffn_cfg=ffn)),
            decoder=dict(num_layers=2, layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=EMBED, num_heads=2, dropout=0.0),
                cross_attn_cfg=deform_attn, ffn_cfg=ffn))),
        positional_encoding=dict(num_feats=EMBED // 2),
        dn_cfg=dict(group_cfg=dict(num_dn_queries=6))),
    adapter=dict(in_channels=EMBED, norm_cfg=gn),
    aux_heads=dict(
        rcnn=dict(rpn=dict(in_channels=EMBED, feat_channels=EMBED),
                  roi=dict(bbox_roi_extractor=dict(out_channels=EMBED),
                           bbox_head=dict(in_channels=EMBED, conv_out_channels=EMBED,
                                          fc_out_channels=64, norm_cfg=gn))),
        atss=dict(in_channels=EMBED, feat_channels=EMBED, norm_cfg=gn)),
    train_cfg=dict(rcnn=dict(rpn_proposal=dict(nms_pre=200, max_per_img=50),
                             rcnn=dict(sampler=dict(num=32)))),
)


@pytest.fixture(scope='module')
def model():
    cfg = Config.fromfile(ROOT / 'configs/_base_/models/co_dino_5scale_vit_l.py')
    cfg.merge_from_dict(dict(model=TINY))
    assert cfg.model.backbone.with_cp and cfg.model.backbone.type == 'ViT'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_one_training_step_reaches_every_parameter(model):
    model.train()
    torch.manual_seed(1)
    data = model.data_preprocessor(make_batch([(96, 128), (80, 112)], num_gt=3), training=True)
    assert data['inputs'].shape[-2:] == (96, 128)  # padded to 32: 6 x 8 tokens, windows padded
    losses = model(**data, mode='loss')
    assert {'loss_cls', 'rcnn.loss_cls', 'atss.loss_cls', 'rcnn.pos.loss_cls'} <= set(losses)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    model.zero_grad()
    total.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f'parameters without a finite gradient: {missing}'
    dead = [n for n, p in model.named_parameters() if n.startswith(('backbone.', 'neck.'))
            and not p.grad.any()]
    assert not dead, f'backbone / neck parameters with a zero gradient: {dead}'


def test_a_whole_official_checkpoint_converts(model):
    """Official layout: ViT blocks in EVA-02 names with RoPE buffers, the SFP as it is, aux
    heads under indices, and the EMA hook's ema_* buffers; converted, it loads strictly."""
    ours = {k: torch.randn_like(v) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}
    backbone = official_state(VIT, seed=3)
    official = _to_official({k: v for k, v in ours.items() if not k.startswith('backbone.')},
                            official_head_order(model))
    official.update({f'backbone.{k}': v for k, v in backbone.items()})
    official.update({'ema_' + k.replace('.', '_'): v for k, v in list(official.items())})
    assert 'roi_head.0.bbox_head.shared_convs.3.conv.weight' in official
    converted = convert_official(official, model)
    assert sorted(converted) == sorted(ours)
    copy.deepcopy(model).load_state_dict(converted, strict=True)
    assert torch.equal(converted['backbone.blocks.2.mlp.fc1_x.weight'],
                       backbone['blocks.2.mlp.w2.weight'])
    for key in ('neck.p2.1.weight', 'aux_heads.rcnn.roi_head.bbox_head.shared_convs.0.gn.bias',
                'query_head.pos_query_generators.atss.pos_trans.weight'):
        assert torch.equal(converted[key], ours[key]), key


def test_converter_tool_converts_an_official_vit_checkpoint(model, tmp_path):
    """tools/model_converters/codetr_official_to_codetr.py with a config of the model."""
    from tests.test_official_parity import _converter_tool
    config = tmp_path / 'tiny_vit_co_dino.py'
    config.write_text(f"_base_ = ['{ROOT}/configs/_base_/models/co_dino_5scale_vit_l.py']\n"
                      f"default_scope = 'codetr'\nmodel = {TINY!r}\n")
    official = _to_official({k: v for k, v in model.state_dict().items()
                             if not k.startswith('backbone.')}, official_head_order(model))
    official.update({f'backbone.{k}': v for k, v in official_state(VIT).items()})
    torch.save({'state_dict': official}, tmp_path / 'official.pth')
    _converter_tool(ROOT).main([str(config), str(tmp_path / 'official.pth'),
                                str(tmp_path / 'codetr.pth')])
    converted = torch.load(tmp_path / 'codetr.pth', weights_only=True)['state_dict']
    assert sorted(converted) == sorted(model.state_dict())
