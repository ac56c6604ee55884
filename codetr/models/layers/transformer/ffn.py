"""Position-wise feed-forward block of the transformer layers."""
from __future__ import annotations

import torch
from mmcv.cnn import build_activation_layer
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from codetr.registry import MODELS


class _LinearReluLinear(torch.autograd.Function):
    """``relu(x W1^T + b1) W2^T + b2`` on (N, C) rows with a hand-written backward.

    Same products and results as autograd's Linear / ReLU / Linear chain; the difference is
    the ReLU's backward, which masks the (N, F) hidden gradient in place instead of writing
    a fresh (N, F) tensor: at the encoder's size (17,050 tokens x 2,048) one 140 MB
    allocation, its page faults and a pass less per FFN backward.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
                b2: Tensor) -> Tensor:
        hidden = torch.addmm(b1, x, w1.t())  # [N, F]
        hidden.clamp_min_(0)
        ctx.save_for_backward(x, w1, w2, hidden)
        return torch.addmm(b2, hidden, w2.t())  # [N, C]

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w1, w2, hidden = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_w2 = grad.t().mm(hidden) if needs[3] else None
        grad_b2 = grad.sum(0) if needs[4] else None
        grad_hidden = grad.mm(w2)  # [N, F]
        # relu backward in place: zero where the (saved, post-relu) hidden value is 0
        torch.ops.aten.threshold_backward.grad_input(grad_hidden, hidden, 0,
                                                     grad_input=grad_hidden)
        grad_w1 = grad_hidden.t().mm(x) if needs[1] else None
        grad_b1 = grad_hidden.sum(0) if needs[2] else None
        grad_x = grad_hidden.mm(w1) if needs[0] else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


@MODELS.register_module()
class FFN(nn.Module):
    """``x + Linear(ReLU(Linear(x)))`` with dropout, laid out as MMDetection's FFN.

    Parameters are named ``layers.0.0`` (C -> F) and ``layers.1`` (F -> C) so official
    checkpoints load by name. In training with a ReLU, without dropout or autocast, the
    block runs as one autograd function (:class:`_LinearReluLinear`: same result, in-place
    ReLU backward); otherwise (inference, export, dropout, autocast) through the modules.

    Args:
        embed_dims: channels C.
        feedforward_channels: hidden width F.
        ffn_drop: dropout after the activation and after the second linear.
        add_identity: add the residual (False returns the bare MLP output).
        act_cfg: the activation (an mmcv activation config); default in-place ReLU. DAB-DETR
            uses ``dict(type='PReLU')``, whose one learned slope is ``layers.0.1.weight``.
    """

    def __init__(self, embed_dims: int = 256, feedforward_channels: int = 1024,
                 ffn_drop: float = 0.0, add_identity: bool = True,
                 act_cfg: dict | None = None) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.add_identity = add_identity
        act = (nn.ReLU(inplace=True) if act_cfg is None
               else build_activation_layer(dict(act_cfg)))
        # The module path applies its activation on the first Linear's output, which forward()
        # makes a fresh 2-D tensor by flattening the tokens first (on a (B, N, C) input Linear
        # returns a view of its 2-D product, and an in-place ReLU on that view makes autograd
        # copy the whole gradient back: a CopySlices node per FFN).
        self.plain_relu = type(act) is nn.ReLU  # the fused training path computes a ReLU
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), act,
                          nn.Dropout(ffn_drop)),
            nn.Linear(feedforward_channels, embed_dims),
            nn.Dropout(ffn_drop))
        self.ffn_drop = ffn_drop

    def _fused_backward(self, x: Tensor) -> bool:
        """Training with gradients, a ReLU, no dropout, no autocast, not traced (inference
        and export keep the plain modules)."""
        return (self.training and self.plain_relu and self.ffn_drop == 0 and torch.is_grad_enabled()
                and not torch.is_autocast_enabled(x.device.type)
                and not torch.jit.is_tracing() and not torch.jit.is_scripting())

    def forward(self, x: Tensor, identity: Tensor | None = None) -> Tensor:
        """(..., C) -> (..., C); ``identity`` defaults to ``x``."""
        flat = x.reshape(-1, x.shape[-1])
        if self._fused_backward(x):
            first, second = self.layers[0][0], self.layers[1]
            out = _LinearReluLinear.apply(flat, first.weight, first.bias, second.weight,
                                          second.bias)
        else:
            out = self.layers(flat)
        out = out.view(*x.shape[:-1], -1)
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out
