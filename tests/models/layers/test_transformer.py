"""Encoder, decoders and helpers of the DETR one-to-one branch.

Widths are tiny (C=32) except in the state-dict test, which builds the official R50 sizes.
"""
import math
import sys

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from codetr.models.layers.transformer import (
    DeformableDetrTransformerDecoder,
    DeformableDetrTransformerEncoder,
    DinoTransformerDecoder,
    coordinate_to_encoding,
    gen_encoder_output_proposals,
    get_reference_points,
    get_valid_ratio,
    inverse_sigmoid,
    refine_reference_points,
)
from codetr.models.layers.transformer import encoder as encoder_module
from codetr.registry import MODELS

C, HEADS, LEVELS, POINTS, FFN_DIMS = 32, 4, 2, 2, 64
SHAPES = [(4, 4), (2, 2)]
# Image 1 of the batch is padded: valid (rows, cols) per level.
VALID_1 = [(3, 2), (2, 1)]


def _layer_cfg(decoder: bool, dropout: float = 0.0, dims: int = C, heads: int = HEADS,
               levels: int = LEVELS, points: int = POINTS, ffn: int = FFN_DIMS) -> dict:
    msda = dict(embed_dims=dims, num_heads=heads, num_levels=levels, num_points=points,
                dropout=dropout, backend='pytorch')
    cfg = dict(ffn_cfg=dict(embed_dims=dims, feedforward_channels=ffn, ffn_drop=dropout))
    if decoder:
        cfg.update(self_attn_cfg=dict(embed_dims=dims, num_heads=heads, dropout=dropout),
                   cross_attn_cfg=msda)
    else:
        cfg.update(self_attn_cfg=msda)
    return cfg


def _pyramid(batch: int = 2) -> dict:
    """Flattened 2-level inputs; image 1 (if any) is padded as VALID_1 says."""
    masks = []
    for (h, w), (vh, vw) in zip(SHAPES, VALID_1):
        mask = torch.zeros(batch, h, w, dtype=torch.bool)
        if batch > 1:
            mask[1, vh:, :] = True
            mask[1, :, vw:] = True
        masks.append(mask)
    spatial_shapes = torch.tensor(SHAPES, dtype=torch.long)
    areas = spatial_shapes.prod(1)
    return dict(
        key_padding_mask=torch.cat([m.flatten(1) for m in masks], 1),
        spatial_shapes=spatial_shapes,
        level_start_index=torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]]),
        valid_ratios=torch.stack([get_valid_ratio(m) for m in masks], 1))


def _num_values() -> int:
    return sum(h * w for h, w in SHAPES)


# ---------------------------------------------------------------- helpers


def test_inverse_sigmoid_values_and_clamp():
    x = torch.tensor([0.5, 0.8, 0.0, 1.0])
    out = inverse_sigmoid(x, eps=1e-3)
    expected = torch.tensor([0.0, math.log(4.0), math.log(1e-3), -math.log(1e-3)])
    torch.testing.assert_close(out, expected)


def test_coordinate_to_encoding_points_and_boxes_by_hand():
    # num_feats 4, temperature 100: dim_t = [1, 1, 10, 10]; coordinates are scaled by 2 pi.
    def feats(v: float) -> list[float]:
        a = 2 * math.pi * v
        return [math.sin(a), math.cos(a), math.sin(a / 10), math.cos(a / 10)]

    point = torch.tensor([[[0.25, 0.5]]])  # (B=1, Q=1, 2) as xy
    out = coordinate_to_encoding(point, num_feats=4, temperature=100)
    assert out.shape == (1, 1, 8)
    torch.testing.assert_close(out[0, 0], torch.tensor(feats(0.5) + feats(0.25)))  # y then x

    box = torch.tensor([[[0.25, 0.5, 0.1, 0.3]]])
    out = coordinate_to_encoding(box, num_feats=4, temperature=100)
    expected = feats(0.5) + feats(0.25) + feats(0.1) + feats(0.3)  # y, x, w, h
    torch.testing.assert_close(out[0, 0], torch.tensor(expected))
    assert coordinate_to_encoding(torch.rand(2, 3, 4)).shape == (2, 3, 512)
    with pytest.raises(ValueError, match='last dimension 3'):
        coordinate_to_encoding(torch.rand(1, 2, 3))


def test_get_valid_ratio_is_w_then_h():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, 3:, :] = True
    mask[:, :, 2:] = True
    torch.testing.assert_close(get_valid_ratio(mask), torch.tensor([[0.5, 0.75]]))


def test_get_reference_points_normalise_by_valid_size():
    pyr = _pyramid(batch=2)
    ref = get_reference_points(pyr['spatial_shapes'], pyr['valid_ratios'])
    assert ref.shape == (2, _num_values(), LEVELS, 2)
    # Unpadded image, level 0 pixel (row 1, col 2): centre (2.5, 1.5) / 4, same on every level.
    torch.testing.assert_close(ref[0, 6], torch.tensor([[0.625, 0.375]] * 2))
    # Padded image, level 0 valid 3 x 2 of 4 x 4 (ratios w 0.5, h 0.75); pixel (0, 1):
    # centre (1.5, 0.5) / (2, 3) = (0.75, 1/6); on level 0 x (0.5, 0.75), level 1 x (0.5, 1).
    torch.testing.assert_close(ref[1, 1], torch.tensor([[0.375, 0.125], [0.375, 1 / 6]]))


def test_gen_encoder_output_proposals_by_hand():
    # Two levels, 2x2 and 1x1. Image 1 has its right column padded on level 0.
    spatial_shapes = torch.tensor([[2, 2], [1, 1]])
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, [1, 3]] = True
    memory = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3) + 1
    out_memory, proposals = gen_encoder_output_proposals(memory, mask, spatial_shapes)

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    inf = float('inf')
    lvl0, lvl1 = logit(0.05), logit(0.1)
    expected = torch.tensor([
        [[logit(0.25), logit(0.25), lvl0, lvl0], [logit(0.75), logit(0.25), lvl0, lvl0],
         [logit(0.25), logit(0.75), lvl0, lvl0], [logit(0.75), logit(0.75), lvl0, lvl0],
         [0.0, 0.0, lvl1, lvl1]],
        # Valid size 1 x 2 (w x h): x = 0.5 / 1, y = 0.5 / 2 or 1.5 / 2; padded rows are inf.
        [[0.0, logit(0.25), lvl0, lvl0], [inf] * 4,
         [0.0, logit(0.75), lvl0, lvl0], [inf] * 4,
         [0.0, 0.0, lvl1, lvl1]]])
    torch.testing.assert_close(proposals, expected)
    torch.testing.assert_close(out_memory[0], memory[0])
    assert (out_memory[1, [1, 3]] == 0).all()
    torch.testing.assert_close(out_memory[1, [0, 2, 4]], memory[1, [0, 2, 4]])


def test_gen_encoder_output_proposals_rejects_oversized_boxes():
    # Side 0.05 * 2 ** level: level 4 gives 0.8 (kept), level 5 gives 1.6 (outside (0.01, 0.99)).
    spatial_shapes = torch.ones(6, 2, dtype=torch.long)
    memory = torch.ones(1, 6, 2)
    out_memory, proposals = gen_encoder_output_proposals(memory, None, spatial_shapes)
    assert torch.isfinite(proposals[0, :5]).all()
    torch.testing.assert_close(proposals[0, 4, 2], torch.tensor(math.log(0.8 / 0.2)))
    assert torch.isinf(proposals[0, 5]).all()
    assert out_memory[0, 5].abs().sum() == 0 and out_memory[0, :5].abs().sum() == 10


def test_refine_reference_points_for_points_offsets_only_the_centre():
    deltas = torch.tensor([[[0.5, -0.5, 1.0, 2.0]]])
    points = torch.tensor([[[0.5, 0.5]]])
    out = refine_reference_points(deltas, points)
    torch.testing.assert_close(out, deltas.sigmoid())


# ---------------------------------------------------------------- encoder


def _encoder(num_layers: int = 2, num_cp: int = 0, dropout: float = 0.0) -> nn.Module:
    return MODELS.build(dict(type='DeformableDetrTransformerEncoder', num_layers=num_layers,
                             num_cp=num_cp, layer_cfg=_layer_cfg(False, dropout)))


def test_encoder_shape_and_padding_does_not_leak():
    torch.manual_seed(0)
    encoder = _encoder().eval()
    pyr = _pyramid()
    query, pos = torch.randn(2, _num_values(), C), torch.randn(2, _num_values(), C)
    memory = encoder(query, pos, **pyr)
    assert memory.shape == (2, _num_values(), C)
    padded = pyr['key_padding_mask']
    assert padded[1].sum() == 16 - 6 + 4 - 2 and not padded[0].any()
    perturbed = query.clone()
    perturbed[padded] += 100 * torch.randn(int(padded.sum()), C)
    memory2 = encoder(perturbed, pos, **pyr)
    torch.testing.assert_close(memory2[~padded], memory[~padded])
    assert not torch.allclose(memory2[padded], memory[padded])


def test_encoder_checkpointing_matches_plain_outputs_and_gradients(monkeypatch):
    calls = []

    def counting_checkpoint(fn, *args, **kwargs):
        calls.append(kwargs.get('use_reentrant'))
        return checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(encoder_module, 'checkpoint', counting_checkpoint)
    torch.manual_seed(0)
    plain = _encoder(num_layers=3, dropout=0.1).train()
    ckpt = _encoder(num_layers=3, num_cp=2, dropout=0.1).train()
    ckpt.load_state_dict(plain.state_dict())
    pyr = _pyramid()
    query = torch.randn(2, _num_values(), C)
    pos = torch.randn(2, _num_values(), C)
    outputs, grads = [], []
    for model in (plain, ckpt):
        inp = query.clone().requires_grad_()
        torch.manual_seed(1)  # same dropout draws; checkpointing must replay them exactly
        out = model(inp, pos, **pyr)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append({'input': inp.grad, **{n: p.grad for n, p in model.named_parameters()}})
    with torch.no_grad():
        ckpt(query, pos, **pyr)  # no backward will follow: no recomputation either
    assert calls == [False, False]  # the first num_cp=2 layers, non-reentrant
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert grad is not None, name
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=1e-6, msg=name)


def test_encoder_checkpoint_arguments_are_checked():
    with pytest.raises(ValueError, match='num_cp=3'):
        _encoder(num_layers=2, num_cp=3)
    with pytest.raises(ValueError, match='cp_impl'):
        DeformableDetrTransformerEncoder(2, _layer_cfg(False), num_cp=1, cp_impl='deepspeed')


def test_encoder_fairscale_missing_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'fairscale.nn.checkpoint', None)  # import fails
    with pytest.raises(ImportError, match="cp_impl='torch'"):
        DeformableDetrTransformerEncoder(2, _layer_cfg(False), num_cp=1, cp_impl='fairscale')


def test_encoder_fairscale_checkpointing_equals_torch_checkpointing():
    """fairscale's ``checkpoint_wrapper`` (the official code's) and ``torch.utils.checkpoint``
    give the same outputs and gradients, dropout included, and the same parameter names."""
    from fairscale.nn.checkpoint import checkpoint_wrapper  # noqa: F401  (the tests extra)
    torch.manual_seed(0)
    torch_cp = _encoder(num_layers=3, num_cp=2, dropout=0.1).train()
    fair_cp = MODELS.build(dict(type='DeformableDetrTransformerEncoder', num_layers=3,
                                num_cp=2, cp_impl='fairscale',
                                layer_cfg=_layer_cfg(False, 0.1))).train()
    assert list(fair_cp.state_dict()) == list(torch_cp.state_dict())
    fair_cp.load_state_dict(torch_cp.state_dict())
    forwards = []
    fair_cp.layers[0].ffns[0].register_forward_hook(lambda *_: forwards.append(1))
    pyr, query = _pyramid(), torch.randn(2, _num_values(), C)
    pos = torch.randn(2, _num_values(), C)
    results = []
    for model in (torch_cp, fair_cp):
        inp = query.clone().requires_grad_()
        torch.manual_seed(1)  # same dropout draws; both must replay them when recomputing
        out = model(inp, pos, **pyr)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), {'input': inp.grad,
                                       **{n: p.grad for n, p in model.named_parameters()}}))
    assert len(forwards) == 2  # layer 0 ran again in the backward pass: it was checkpointed
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-6)
    for name, grad in results[0][1].items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(results[1][1][name], grad, rtol=0, atol=1e-6, msg=name)


def test_init_weights_keeps_deformable_attention_initialisation():
    encoder = _encoder()
    nn.init.constant_(encoder.layers[0].attentions[0].attention_weights.weight, 1.0)
    encoder.init_weights()
    assert encoder.layers[0].attentions[0].attention_weights.weight.abs().sum() == 0
    ffn_weight = encoder.layers[0].ffns[0].layers[1].weight
    bound = math.sqrt(6 / (FFN_DIMS + C))  # xavier uniform
    assert ffn_weight.abs().max() <= bound


# ---------------------------------------------------------------- decoders

NUM_QUERIES = 6


def _dino(num_layers: int = 2, **kwargs) -> DinoTransformerDecoder:
    return MODELS.build(dict(type='DinoTransformerDecoder', num_layers=num_layers,
                             layer_cfg=_layer_cfg(True), **kwargs))


def _reg_branches(num_layers: int = 2) -> nn.ModuleList:
    return nn.ModuleList([nn.Linear(C, 4) for _ in range(num_layers)])


def _decoder_inputs(batch: int = 2) -> dict:
    return dict(query=torch.randn(batch, NUM_QUERIES, C),
                value=torch.randn(batch, _num_values(), C),
                reference_points=torch.rand(batch, NUM_QUERIES, 4) * 0.5 + 0.25,
                **_pyramid(batch))


def _run_dino(decoder, reg_branches, inputs, self_attn_mask=None):
    return decoder(self_attn_mask=self_attn_mask, reg_branches=reg_branches, **inputs)


def test_dino_decoder_shapes_and_intermediates():
    torch.manual_seed(0)
    inputs = _decoder_inputs()
    hidden, refs = _run_dino(_dino(num_layers=3).eval(), _reg_branches(3), inputs)
    assert hidden.shape == (3, 2, NUM_QUERIES, C) and refs.shape == (4, 2, NUM_QUERIES, 4)
    torch.testing.assert_close(refs[0], inputs['reference_points'])
    assert ((refs > 0) & (refs < 1)).all()
    # The final LayerNorm (weight 1, bias 0 at init) leaves every row at mean 0, variance 1.
    torch.testing.assert_close(hidden.mean(-1), torch.zeros(3, 2, NUM_QUERIES), atol=1e-5,
                               rtol=0)
    last = _dino(num_layers=3, return_intermediate=False)
    last.load_state_dict(_dino(num_layers=3).state_dict())
    hidden_last, refs_last = _run_dino(last.eval(), _reg_branches(3), inputs)
    assert hidden_last.shape == (1, 2, NUM_QUERIES, C) and refs_last.shape == (2, 2,
                                                                               NUM_QUERIES, 4)


def test_dino_decoder_query_pos_and_refinement_follow_dino():
    torch.manual_seed(0)
    decoder, reg = _dino().eval(), _reg_branches()
    inputs = _decoder_inputs()
    seen = {}

    def keep(name: str, index: int | None):
        def hook(module, args, out) -> None:  # returning None keeps the module's output
            seen.setdefault(name, out if index is None else args[index])  # layer 0's call
        return hook

    decoder.ref_point_head.register_forward_hook(keep('sine', 0))
    decoder.layers[0].register_forward_hook(keep('out0', None))
    hidden, refs = _run_dino(decoder, reg, inputs)
    ratios = inputs['valid_ratios'][:, 0]  # level-0 view, (B, 2) as (w, h)
    expected_sine = coordinate_to_encoding(
        inputs['reference_points'] * torch.cat([ratios, ratios], -1)[:, None], num_feats=C // 2)
    torch.testing.assert_close(seen['sine'], expected_sine)
    expected_ref1 = (reg[0](seen['out0']) + inverse_sigmoid(refs[0], eps=1e-3)).sigmoid()
    torch.testing.assert_close(refs[1], expected_ref1)
    torch.testing.assert_close(hidden[0], decoder.norm(seen['out0']))


@pytest.mark.parametrize('look_forward_twice', [True, False])
def test_look_forward_twice_sends_layer_loss_into_previous_refinement(look_forward_twice):
    torch.manual_seed(0)
    decoder, reg = _dino(look_forward_twice=look_forward_twice).train(), _reg_branches()
    hidden, refs = _run_dino(decoder, reg, _decoder_inputs())
    # A head's layer-1 box prediction, as DINO's head computes it.
    boxes = (reg[1](hidden[1]) + inverse_sigmoid(refs[1])).sigmoid()
    boxes.sum().backward()
    assert reg[1].weight.grad.abs().sum() > 0
    if look_forward_twice:
        assert reg[0].weight.grad.abs().sum() > 0
    else:
        assert reg[0].weight.grad is None
    # Each layer's input box is always detached: layer 1's content never reaches reg[0].
    reg.zero_grad(set_to_none=True)
    hidden, _ = _run_dino(decoder, reg, _decoder_inputs())
    hidden[1].sum().backward()
    assert reg[0].weight.grad is None


def test_self_attn_mask_blocks_information_flow():
    torch.manual_seed(0)
    decoder, reg = _dino().eval(), _reg_branches()
    inputs = _decoder_inputs()
    # Two groups {0, 1, 2} and {3, 4, 5} that may not see each other (True = masked).
    group = torch.arange(NUM_QUERIES) // 3
    mask = group[:, None] != group[None, :]
    hidden, refs = _run_dino(decoder, reg, inputs, mask)
    perturbed = dict(inputs, query=inputs['query'].clone())
    perturbed['query'][:, 5] += 5.0
    hidden2, refs2 = _run_dino(decoder, reg, perturbed, mask)
    torch.testing.assert_close(hidden2[:, :, :3], hidden[:, :, :3])
    torch.testing.assert_close(refs2[:, :, :3], refs[:, :, :3])
    assert not torch.allclose(hidden2[:, :, 3:5], hidden[:, :, 3:5])
    # Without the mask the change reaches the first group.
    hidden3, _ = _run_dino(decoder, reg, perturbed)
    assert not torch.allclose(hidden3[:, :, :3], _run_dino(decoder, reg, inputs)[0][:, :, :3])


def test_dino_decoder_rejects_point_references():
    inputs = dict(_decoder_inputs(), reference_points=torch.rand(2, NUM_QUERIES, 2))
    with pytest.raises(ValueError, match='cxcywh'):
        _run_dino(_dino(), _reg_branches(), inputs)


def _deformable(**kwargs) -> DeformableDetrTransformerDecoder:
    return MODELS.build(dict(type='DeformableDetrTransformerDecoder', num_layers=2,
                             layer_cfg=_layer_cfg(True), **kwargs))


def test_deformable_decoder_points_without_refinement():
    torch.manual_seed(0)
    inputs = _decoder_inputs()
    inputs['reference_points'] = inputs['reference_points'][..., :2]
    hidden, refs = _deformable().eval()(query_pos=torch.randn(2, NUM_QUERIES, C), **inputs)
    assert hidden.shape == (2, 2, NUM_QUERIES, C) and refs.shape == (3, 2, NUM_QUERIES, 2)
    for ref in refs:
        torch.testing.assert_close(ref, inputs['reference_points'])


@pytest.mark.parametrize('box_input', [False, True])
def test_deformable_decoder_refinement_matches_head_formula(box_input):
    torch.manual_seed(0)
    reg = _reg_branches()
    inputs = _decoder_inputs()
    if not box_input:
        inputs['reference_points'] = inputs['reference_points'][..., :2]
    decoder = _deformable().eval()
    hidden, refs = decoder(query_pos=torch.randn(2, NUM_QUERIES, C), reg_branches=reg, **inputs)
    assert refs.shape == (3, 2, NUM_QUERIES, 4) and not refs.requires_grad
    # No final norm: hidden_states are what the regression branches saw. Predicting from
    # references[l] reproduces the decoder's own refinement, even for lifted 2-d points.
    for lid in range(2):
        expected = (reg[lid](hidden[lid]) + inverse_sigmoid(refs[lid])).sigmoid()
        torch.testing.assert_close(refs[lid + 1], expected)
    if not box_input:
        torch.testing.assert_close(refs[0, ..., 2:], torch.full((2, NUM_QUERIES, 2), 0.5))


# ---------------------------------------------------------------- official key layout


def _official_keys(shared_dir, prefix: str) -> dict[str, tuple[int, ...]]:
    table = shared_dir / 'reference' / 'co_dino_5scale_r50_mmdet3_state_dict.tsv'
    keys = {}
    for line in table.read_text().splitlines():
        name, _, shape = line.partition('\t')
        if name.startswith(prefix):
            keys[name[len(prefix):]] = tuple(int(s) for s in shape.strip('()').split(',') if s)
    return keys


def test_state_dicts_match_the_official_co_dino_r50(shared_dir):
    enc_cfg = _layer_cfg(False, dims=256, heads=8, levels=5, points=4, ffn=2048)
    dec_cfg = _layer_cfg(True, dims=256, heads=8, levels=5, points=4, ffn=2048)
    encoder = DeformableDetrTransformerEncoder(6, enc_cfg, num_cp=4)
    decoder = DinoTransformerDecoder(6, dec_cfg)
    for module, prefix in ((encoder, 'query_head.transformer.encoder.'),
                           (decoder, 'query_head.transformer.decoder.')):
        official = _official_keys(shared_dir, prefix)
        ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert len(official) > 0
        assert ours == official


def test_the_ports_tiny_co_dino_weights_load_strictly(shared_dir):
    """The parity fixture's 2-layer encoder and decoder load by name, nothing left over."""
    weights = torch.load(shared_dir / 'fixtures' / 'co_dino_tiny_mmdet3' / 'weights_mmdet3.pth',
                         weights_only=True)
    enc_cfg = _layer_cfg(False, dims=256, heads=8, levels=5, points=4, ffn=2048)
    dec_cfg = _layer_cfg(True, dims=256, heads=8, levels=5, points=4, ffn=2048)
    for module, prefix in ((DeformableDetrTransformerEncoder(2, enc_cfg), 'encoder.'),
                           (DinoTransformerDecoder(2, dec_cfg), 'decoder.')):
        prefix = 'query_head.transformer.' + prefix
        part = {k[len(prefix):]: v.float() for k, v in weights.items() if k.startswith(prefix)}
        module.load_state_dict(part, strict=True)
        name, value = next(iter(part.items()))
        torch.testing.assert_close(module.state_dict()[name], value)


def _graph_node_names(out: torch.Tensor) -> set[str]:
    names, stack, seen = set(), [out.grad_fn], set()
    while stack:  # walk the autograd graph
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


def test_ffn_training_path_is_one_function_with_the_formula_and_its_gradients():
    from codetr.models.layers.transformer import FFN
    torch.manual_seed(0)
    ffn = FFN(embed_dims=8, feedforward_channels=16)
    x = torch.randn(2, 5, 8, requires_grad=True)
    out = ffn(x)
    first, second = ffn.layers[0][0], ffn.layers[1]
    expected = x + second(torch.relu(first(x)))
    torch.testing.assert_close(out, expected)
    names = _graph_node_names(out)
    assert 'CopySlices' not in names and 'ReluBackward0' not in names
    assert any('LinearReluLinear' in n for n in names)
    params = (x, first.weight, first.bias, second.weight, second.bias)
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, params, grad),
                    torch.autograd.grad(expected, params, grad)):
        torch.testing.assert_close(a, b)
    first.requires_grad_(False)  # frozen first layer: its gradients are not computed
    gx, gw = torch.autograd.grad(ffn(x).sum(), (x, second.weight))
    expected = x + second(torch.relu(first(x)))
    ref_x, ref_w = torch.autograd.grad(expected.sum(), (x, second.weight))
    torch.testing.assert_close(gx, ref_x)
    torch.testing.assert_close(gw, ref_w)


def test_ffn_module_path_in_eval_and_with_dropout():
    from codetr.models.layers.transformer import FFN
    torch.manual_seed(0)
    ffn = FFN(embed_dims=8, feedforward_channels=16, ffn_drop=0.5)
    x = torch.randn(2, 5, 8, requires_grad=True)
    assert 'ReluBackward0' in _graph_node_names(ffn(x))  # dropout active: the modules
    ffn.eval()
    first, second = ffn.layers[0][0], ffn.layers[1]
    out = ffn(x)
    torch.testing.assert_close(out, x + second(torch.relu(first(x))))
    assert 'CopySlices' not in _graph_node_names(out) and 'ReluBackward0' in _graph_node_names(
        out)


def test_ffn_other_activation_keeps_the_module_path_in_training():
    from codetr.models.layers.transformer import FFN
    torch.manual_seed(0)
    ffn = FFN(embed_dims=8, feedforward_channels=16, act_cfg=dict(type='PReLU'))
    with torch.no_grad():
        ffn.layers[0][1].weight.fill_(0.25)
    x = torch.randn(2, 5, 8)
    out = ffn(x)
    first, second = ffn.layers[0][0], ffn.layers[1]
    hidden = first(x)
    expected = x + second(torch.where(hidden > 0, hidden, 0.25 * hidden))
    torch.testing.assert_close(out, expected)
    assert not any('LinearReluLinear' in n for n in _graph_node_names(out))
    out.sum().backward()
    assert ffn.layers[0][1].weight.grad is not None  # the PReLU slope trains
