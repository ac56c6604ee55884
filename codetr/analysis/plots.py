"""Figures of the paper's analyses: IoF-IoB curves, score-map panels, instability curves and
branch matrices. Each function writes one PNG (matplotlib, Agg backend)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_iof_iob(curves: Sequence[dict], path: str | Path) -> None:
    """One panel per part (``encoder``, ``decoder``), one curve per checkpoint: IoF against
    IoB (paper Fig. 2). ``curves``: ``[{label, encoder: result, decoder: result?}]``."""
    plt = _pyplot()
    parts = [p for p in ('encoder', 'decoder') if any(p in c for c in curves)]
    fig, axes = plt.subplots(1, len(parts), figsize=(4.6 * len(parts), 4.2), squeeze=False)
    for ax, part in zip(axes[0], parts):
        for curve in curves:
            if part in curve:
                res = curve[part]
                ax.plot(res['iob'], res['iof'], label=f"{curve['label']} (AUC {res['auc']:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel('IoB (background scoring below S)')
        ax.set_ylabel('IoF (foreground scoring above S)')
        what = 'feature' if part == 'encoder' else 'positive-query attention'
        ax.set_title(f'{part}: {what} discriminability')
        ax.legend(fontsize=8, loc='lower left')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_panels(panels: Sequence[np.ndarray], titles: Sequence[str], path: str | Path,
                boxes: np.ndarray | None = None) -> None:
    """``(H, W, 3)`` uint8 RGB panels side by side with titles; ``(N, 4)`` xyxy ``boxes``
    outlined on every panel."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, panel, title in zip(axes[0], panels, titles):
        ax.imshow(panel)
        for x1, y1, x2, y2 in (boxes if boxes is not None else []):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1,
                                       ec='white'))
        ax.set_title(title, fontsize=8)
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_instability(epochs: Sequence[int | str], per_pair: Sequence[Sequence[dict]],
                     path: str | Path) -> None:
    """Changed fraction and IS per image against the later epoch of each pair, one line per
    decoder layer (paper Fig. 5). ``per_pair[pair][layer]`` as ``compare_matchings`` gives."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = [str(e) for e in epochs[1:]]
    num_layers = len(per_pair[0]) if per_pair else 0
    for layer in range(num_layers):
        for ax, key in zip(axes, ('changed_fraction', 'is_per_image')):
            ax.plot(xs, [pair[layer][key] for pair in per_pair], marker='o',
                    label=f'decoder layer {layer}')
    axes[0].set_ylabel('GT boxes whose matched query changed')
    axes[1].set_ylabel('IS per image (DN-DETR)')
    for ax in axes:
        ax.set_xlabel('epoch (vs the previous checkpoint)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_matrices(names: Sequence[str], matrices: Sequence[tuple[str, np.ndarray, str]],
                  path: str | Path) -> None:
    """Annotated heat maps of ``(K, K)`` matrices over the same branches;
    ``matrices``: ``(title, matrix, colour map)``."""
    plt = _pyplot()
    size = max(3.2, 0.75 * len(names) + 1.6)
    fig, axes = plt.subplots(1, len(matrices), figsize=(size * len(matrices), size),
                             squeeze=False)
    for ax, (title, matrix, cmap) in zip(axes[0], matrices):
        matrix = np.asarray(matrix, dtype=np.float64)
        image = ax.imshow(matrix, cmap=cmap)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f'{matrix[i, j]:.3g}', ha='center', va='center', fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=45, ha='right', fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
