"""codetr's runners: ``CodetrRunner`` (mmengine's Runner with checked loading, atomic saving and
CPU DDP) and ``CodetrFlexibleRunner`` (mmengine's FlexibleRunner, for FSDP)."""
from __future__ import annotations

import copy
import os.path as osp
from collections.abc import Callable

from mmengine.dist import is_distributed, master_only
from mmengine.model import is_model_wrapper
from mmengine.runner import FlexibleRunner, Runner
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

from codetr.registry import RUNNERS

from .checkpoint import atomic_save, load_checkpoint
from .distributed import cuda_free_init_dist, needs_cuda_free_init

# Values of the config key ``load_from_convert`` and the hook each one adds.
CONVERTERS = {'official': 'OfficialCheckpointHook'}


def add_converter_hook(cfg):
    """A copy of ``cfg`` whose ``load_from_convert`` key became the matching custom hook."""
    cfg = copy.deepcopy(cfg)
    convert = cfg.pop('load_from_convert', None)
    if convert is None:
        return cfg
    if convert not in CONVERTERS:
        raise ValueError(f'load_from_convert={convert!r} is not one of '
                         f'{sorted(CONVERTERS)}; use None for codetr checkpoints.')
    hook_type = CONVERTERS[convert]
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(str(h.get('type', '')).split('.')[-1] == hook_type for h in hooks):
        hooks.append(dict(type=hook_type))
    cfg['custom_hooks'] = hooks
    return cfg


@RUNNERS.register_module()
class CodetrRunner(Runner):
    """The Runner used by codetr configs (``runner_type='CodetrRunner'``).

    Differences from mmengine's Runner, each kept to the method it concerns:

    - ``load_checkpoint`` (also used by ``resume`` and ``load_from``) goes through
      :func:`codetr.engine.checkpoint.load_checkpoint` for local files: clear errors for a
      missing, truncated or foreign file, and ``weights_only`` loading with the allow-list.
    - ``save_checkpoint`` writes to a temporary file and renames it, so a crash mid-save
      never leaves a partial file under the checkpoint's name.
    - ``setup_env`` starts a CPU-only distributed run itself (gloo, no ``cuda.set_device``),
      which mmengine's ``init_dist`` cannot do on a machine without GPUs.
    - ``from_cfg`` reads ``load_from_convert='official'``: ``load_from`` names an official
      Co-DETR checkpoint (Sense-X release or MMDetection port), renamed on load by
      ``OfficialCheckpointHook``.
    """

    CONVERTERS = CONVERTERS

    @classmethod
    def from_cfg(cls, cfg) -> CodetrRunner:
        return super().from_cfg(add_converter_hook(cfg))

    def setup_env(self, env_cfg: dict) -> None:
        dist_cfg = env_cfg.get('dist_cfg', {})
        if self.distributed and not is_distributed() and needs_cuda_free_init():
            cuda_free_init_dist(self.launcher, **dist_cfg)
        super().setup_env(env_cfg)

    def load_checkpoint(self, filename: str, map_location: str | Callable = 'cpu',
                        strict: bool = False,
                        revise_keys: list | None = None) -> dict:
        """Load ``filename`` into the model; local files are checked first (see class doc)."""
        revise_keys = [(r'^module.', '')] if revise_keys is None else revise_keys
        if '://' in filename:  # URLs and mmengine's model-zoo prefixes
            checkpoint = _load_checkpoint(filename, map_location=map_location)
        else:
            # Resuming needs the training state as well as the weights.
            resuming = getattr(self, '_loading_for_resume', False)
            require = ('state_dict', 'meta', 'message_hub') if resuming else ()
            checkpoint = load_checkpoint(filename, map_location, require=require)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict,
                                               revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def resume(self, filename: str, *args, **kwargs) -> None:
        """mmengine's ``resume``; its ``load_checkpoint`` call also checks the training state."""
        self._loading_for_resume = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._loading_for_resume = False

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        """mmengine's ``save_checkpoint``, written atomically for local directories."""
        if '://' in out_dir:  # object stores have their own write semantics
            super().save_checkpoint(out_dir, filename, *args, **kwargs)
            return
        final_path = osp.join(out_dir, filename)

        def save(tmp_path: str) -> None:
            super(CodetrRunner, self).save_checkpoint(
                out_dir, osp.basename(tmp_path), *args, **kwargs)

        atomic_save(save, final_path)


@RUNNERS.register_module()
class CodetrFlexibleRunner(FlexibleRunner):
    """mmengine's ``FlexibleRunner`` (``runner_type='CodetrFlexibleRunner'``) with codetr's
    ``load_from_convert`` key; ``tools/train.py --strategy fsdp`` selects it.

    The strategy (``strategy=dict(type='CodetrFSDPStrategy', ...)``, see
    :mod:`codetr.engine.strategies`) builds, wraps, saves and loads the model; without CUDA
    codetr's strategies start a gloo process group themselves.
    """

    @classmethod
    def from_cfg(cls, cfg) -> CodetrFlexibleRunner:
        return super().from_cfg(add_converter_hook(cfg))
