"""Position-wise feed-forward block of the transformer layers."""
from __future__ import annotations

from mmcv.cnn import build_activation_layer
from torch import Tensor, nn

from codetr.registry import MODELS


@MODELS.register_module()
class FFN(nn.Module):
    """``x + Linear(ReLU(Linear(x)))`` with dropout, laid out as MMDetection's FFN.

    Parameters are named ``layers.0.0`` (C -> F) and ``layers.1`` (F -> C) so official
    checkpoints load by name.

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
        # The ReLU works in place on the first Linear's output, which forward() makes a
        # fresh 2-D tensor by flattening the tokens first. (On a (B, N, C) input Linear
        # returns a view of its 2-D product, and an in-place ReLU on that view makes autograd
        # copy the whole gradient back: a CopySlices node per FFN.) Encoder-sized FFN, forward
        # + backward, 2 threads: 0.77 s vs 0.84 s for a non-in-place ReLU on (B, N, C).
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), act,
                          nn.Dropout(ffn_drop)),
            nn.Linear(feedforward_channels, embed_dims),
            nn.Dropout(ffn_drop))

    def forward(self, x: Tensor, identity: Tensor | None = None) -> Tensor:
        """(..., C) -> (..., C); ``identity`` defaults to ``x``."""
        out = self.layers(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out
