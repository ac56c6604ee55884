"""Load official Co-DETR checkpoints straight from ``load_from``: convert them on the fly."""
from __future__ import annotations

from collections.abc import Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from codetr.registry import HOOKS

from .official import convert_official, is_official_layout


@HOOKS.register_module()
class OfficialCheckpointHook(Hook):
    """Rename an official (Sense-X / MMDetection port) checkpoint as it is loaded.

    Config use::

        load_from = 'co_dino_5scale_r50_1x_coco.pth'      # an official file
        custom_hooks = [dict(type='OfficialCheckpointHook')]

    mmengine's Runner calls ``after_load_checkpoint`` between reading a checkpoint and
    loading it into the model (``load_from``, ``resume`` and ``tools/test.py CKPT`` alike).
    A checkpoint already in codetr's layout is left alone, so resuming a run started from an
    official file works unchanged.

    Args:
        strict: fail on keys present on one side only (see :func:`convert_official`).
        aux_head_order: the model's aux head names in official index order (default: RoI
            heads first, then dense heads).
        skip_mismatched: leave out tensors whose shape differs from the model's (logged), for
            fine-tuning on another class set (Objects365 -> COCO).
    """

    priority = 'VERY_HIGH'

    def __init__(self, strict: bool = True, aux_head_order: Sequence[str] | None = None,
                 skip_mismatched: bool = False) -> None:
        self.strict = strict
        self.aux_head_order = aux_head_order
        self.skip_mismatched = skip_mismatched

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Replace ``checkpoint['state_dict']`` by its codetr names, in place."""
        state_dict = checkpoint.get('state_dict', checkpoint)
        if not is_official_layout(state_dict):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        converted = convert_official(state_dict, model, self.aux_head_order, self.strict,
                                     self.skip_mismatched)
        if 'state_dict' in checkpoint:
            checkpoint['state_dict'] = converted
        else:  # a bare state dict: mmengine loads the mapping itself
            checkpoint.clear()
            checkpoint.update(converted)
        runner.logger.info(f'Converted an official checkpoint ({len(converted)} tensors) to '
                           'codetr names')
