"""The small perceptron of the DETR family (box branches, query scales, reference heads)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last).

    Parameters are named ``layers.{i}`` as in DETR, Conditional-DETR, DAB-DETR and MMDetection.

    Args:
        input_dim: width of the input.
        hidden_dim: width of every hidden layer.
        output_dim: width of the output.
        num_layers: number of Linear layers (>= 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int,
                 num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'MLP needs num_layers >= 1, got {num_layers}')
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        """(..., input_dim) -> (..., output_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
