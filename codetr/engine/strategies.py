"""Sharded training with mmengine's ``FlexibleRunner``: FSDP and DDP strategies that also run
on CPUs, selected by ``tools/train.py --strategy fsdp`` (see :func:`configure_strategy`).

mmengine 0.10.7's ``FSDPStrategy`` wraps the model in torch's ``FullyShardedDataParallel``
(FSDP1). What :class:`CodetrFSDPStrategy` changes, and why:

- mmengine passes ``device_id=LOCAL_RANK`` and its ``init_dist`` calls
  ``torch.cuda.set_device``: both need CUDA. Without CUDA the strategy creates a gloo process
  group itself and gives FSDP ``device_id=torch.device('cpu')`` (FSDP1 shards CPU tensors
  over gloo in torch 2.14);
- gradient clipping (``optim_wrapper.clip_grad``, 0.1 in the Co-DETR configs) would take the
  norm of the gradients each rank *holds*, under FSDP its shard only, so every rank would clip
  by a different factor: the optimizer wrapper clips through FSDP's ``clip_grad_norm_``, the
  norm over all shards;
- FSDP1 refuses 0-d parameters (the ``Scale`` of the ATSS / FCOS heads): they become
  1-element 1-d ones before wrapping, and full state dicts keep the 0-d shape;
- sharded checkpoints (``state_dict_cfg='local'``: ``<checkpoint>/rank{i}.pth``) hold
  ``ShardedTensor`` objects, which ``torch.load(weights_only=True)`` refuses: loading one
  allow-lists exactly those types; resuming fails in mmengine (it calls
  ``FSDP.optim_state_dict_to_load`` with torch 1.x's argument order);
- checkpoints also keep every rank's random states (torch, numpy, ``random``), restored on
  resume with the same number of processes, so denoising noise and samplers continue as in
  an uninterrupted run.

``layer_wrap_policy`` shards layer by layer (encoder layers, backbone blocks) so that only one
layer's parameters are gathered at a time; modules reached through methods other than
``forward`` (aux heads' ``loss``, positive-query passes) stay inside the root unit.
"""
from __future__ import annotations

import functools
import os
import os.path as osp
import random
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine._strategy import DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from mmengine.dist import is_distributed
from mmengine.optim import BaseOptimWrapper, OptimWrapperDict
from torch import nn
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from codetr.registry import FUNCTIONS, SCOPE, STRATEGIES

from .checkpoint import allowed_attributes
from .distributed import cuda_free_init_dist, needs_cuda_free_init

# Modules that ``layer_wrap_policy`` makes their own FSDP unit by default: each is called
# through ``__call__`` (FSDP gathers a unit's parameters in its forward pre-hook), holds a
# large share of the parameters and runs once per forward.
DEFAULT_WRAP_LAYERS = ('DeformableDetrTransformerEncoderLayer', 'SwinBlock', 'ViTDetBlock')


@FUNCTIONS.register_module()
def layer_wrap_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int,
                      layer_types: Iterable[str] = DEFAULT_WRAP_LAYERS) -> bool:
    """FSDP1 ``auto_wrap_policy``: one unit per module whose class name is in ``layer_types``.

    Use as ``model_wrapper=dict(auto_wrap_policy=dict(type='layer_wrap_policy'))`` (add
    ``layer_types=[...]`` to choose others). Only modules always run through ``forward``
    may be listed: a unit's parameters are gathered by its forward hooks.
    """
    if recurse:
        return True  # look inside every module
    return type(module).__name__ in set(layer_types)


class _CPUDistributedMixin:
    """Start the process group without CUDA (gloo), as ``CodetrRunner`` does."""

    def _setup_distributed(self, launcher: str = 'pytorch', backend: str = 'nccl',
                           **kwargs) -> None:
        if is_distributed():
            return
        if needs_cuda_free_init():
            cuda_free_init_dist(launcher, backend, **kwargs)
        else:
            super()._setup_distributed(launcher, backend, **kwargs)


@STRATEGIES.register_module()
class CodetrDDPStrategy(_CPUDistributedMixin, DDPStrategy):
    """mmengine's ``DDPStrategy`` (same arguments) that also runs without CUDA (gloo, DDP
    without device ids): the unsharded counterpart of :class:`CodetrFSDPStrategy`."""

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if needs_cuda_free_init() and self.model_wrapper is None:
            self.model_wrapper = dict(type=f'{SCOPE}.CPUDistributedDataParallel',
                                      broadcast_buffers=False)
        return super()._wrap_model(model)


@STRATEGIES.register_module()
class CodetrFSDPStrategy(_CPUDistributedMixin, FSDPStrategy):
    """mmengine's ``FSDPStrategy`` (same arguments) on CPUs too, with global-norm clipping.

    See the module docstring. ``state_dict_cfg='local'`` (default) saves each rank's shard to
    ``<checkpoint>/rank{i}.pth`` and resumes only with the same number of processes;
    ``'full'`` gathers one ordinary checkpoint on rank 0 (loadable anywhere, e.g. by
    ``tools/test.py``). Ordinary single-file checkpoints (``load_from``) load either way.
    """

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        self._scalar_params = _scalar_params_to_1d(model)
        wrapper = dict(self.model_wrapper or dict(type='MMFullyShardedDataParallel'))
        if needs_cuda_free_init():
            wrapper.setdefault('device_id', torch.device('cpu'))
        else:
            wrapper.setdefault('device_id', int(os.environ.get('LOCAL_RANK', 0)))
        self.model_wrapper = wrapper
        return super()._wrap_model(model)

    def build_optim_wrapper(self, optim_wrapper, model: nn.Module | None = None
                            ) -> BaseOptimWrapper:
        built = super().build_optim_wrapper(optim_wrapper, model)
        wrappers = built.values() if isinstance(built, OptimWrapperDict) else [built]
        for wrapper in wrappers:
            if getattr(wrapper, 'clip_func', None) is torch.nn.utils.clip_grad_norm_:
                wrapper.clip_func = functools.partial(_sharded_clip_grad_norm, model)
        return built

    def save_checkpoint(self, filename: str, *, extra_ckpt: dict | None = None,
                        **kwargs) -> None:
        extra_ckpt = dict(extra_ckpt or {})
        if self._is_full_state_dict():  # one file for all: rank 0 keeps every rank's states
            states = [None] * self.world_size
            torch_dist.all_gather_object(states, capture_rng_state())
            extra_ckpt['rng_state'] = states
        else:  # one file per rank
            extra_ckpt['rng_state'] = capture_rng_state()
        super().save_checkpoint(filename, extra_ckpt=extra_ckpt, **kwargs)

    def resume(self, filename: str, **kwargs) -> dict:
        checkpoint = super().resume(filename, **kwargs)
        state = checkpoint.get('rng_state')
        if isinstance(state, list):  # a full checkpoint: this rank's entry, same world size
            state = state[self.rank] if len(state) == self.world_size else None
        if state is not None:
            restore_rng_state(state)
        return checkpoint

    def model_state_dict(self) -> dict:
        state_dict = super().model_state_dict()
        if self._full_layout():  # the ordinary layout: 0-d parameters stay 0-d
            for name in getattr(self, '_scalar_params', ()):
                if name in state_dict:
                    state_dict[name] = state_dict[name].reshape(())
        return state_dict

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False,
                              revise_keys: list | None = None) -> None:
        if self._full_layout():
            state_dict = dict(state_dict)
            for pattern, replacement in revise_keys or [(r'^module\.', '')]:
                state_dict = {re.sub(pattern, replacement, k): v for k, v in state_dict.items()}
            for name in getattr(self, '_scalar_params', ()):
                if name in state_dict and state_dict[name].dim() == 0:
                    state_dict[name] = state_dict[name].reshape(1)
        self.model.load_state_dict(state_dict, strict=strict)

    def load_checkpoint(self, filename: str, **kwargs) -> dict:
        """Load a checkpoint saved by this strategy, or an ordinary single-file one (``load_from``
        with pretrained or official weights, a ``state_dict_cfg='full'`` save) into a model
        that saves sharded: each rank reads the whole file and keeps its shard."""
        if self._is_full_state_dict() or not osp.isfile(filename):
            with _sharded_tensor_loading():
                return super().load_checkpoint(filename, **kwargs)
        with FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                  FullStateDictConfig(rank0_only=False)):
            return SingleDeviceStrategy.load_checkpoint(self, filename, **kwargs)

    def _full_layout(self) -> bool:
        """Whether the model's state dicts are now full (unsharded) ones."""
        settings = FSDP.get_state_dict_type(self.model)
        return settings.state_dict_type == StateDictType.FULL_STATE_DICT

    def load_optim_state_dict(self, state_dict: dict) -> None:
        # mmengine 0.10.7 passes (state_dict, model, optim) positionally; torch >= 2.1 takes
        # (model, optim, optim_state_dict), so resuming fails there with a TypeError.
        to_load = FSDP.optim_state_dict_to_load(
            model=self.model, optim=self.optim_wrapper.optimizer, optim_state_dict=state_dict)
        self.optim_wrapper.load_state_dict(to_load)


def capture_rng_state() -> dict:
    """This process's random states (torch CPU and CUDA, numpy, ``random``), for a checkpoint.

    Restored on resume, a model that draws random numbers (denoising noise, samplers)
    continues with the draws an uninterrupted run would have made.
    """
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    # numpy's state as tensors and numbers: weights-only loading refuses uint32 arrays.
    numpy_state = dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                       has_gauss=int(has_gauss), cached_gaussian=float(cached_gaussian))
    state = dict(torch=torch.get_rng_state(), numpy=numpy_state, python=random.getstate())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Set the random states saved by :func:`capture_rng_state`."""
    torch.set_rng_state(state['torch'])
    numpy_state = state['numpy']
    np.random.set_state(('MT19937', numpy_state['keys'].numpy().astype(np.uint32),
                         numpy_state['pos'], numpy_state['has_gauss'],
                         numpy_state['cached_gaussian']))
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def _scalar_params_to_1d(model: nn.Module) -> list[str]:
    """Make every 0-d parameter (e.g. the ``Scale`` of ATSS / FCOS heads) a 1-element 1-d one,
    in place, and return their names: FSDP1 refuses scalar parameters. Products with them
    broadcast the same; the strategy restores the 0-d shape in full state dicts."""
    names = []
    for module_name, module in model.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() == 0:
                setattr(module, name, nn.Parameter(param.detach().reshape(1),
                                                   requires_grad=param.requires_grad))
                names.append(f'{module_name}.{name}' if module_name else name)
    return names


def _sharded_clip_grad_norm(model: nn.Module, params: list[torch.Tensor], max_norm: float,
                            norm_type: float = 2.0, **kwargs) -> torch.Tensor:
    """``clip_grad_norm_`` over all ranks' shards (``params`` are this rank's, unused).

    Returns the total norm, as ``torch.nn.utils.clip_grad_norm_`` does, for the log.
    """
    if kwargs:
        raise ValueError(f'clip_grad options {sorted(kwargs)} are not supported with FSDP; '
                         'give max_norm and norm_type only')
    return model.clip_grad_norm_(max_norm, norm_type)


@contextmanager
def _sharded_tensor_loading() -> Iterator[None]:
    """Allow-list, while loading a sharded checkpoint, what FSDP's local state dicts pickle:
    ``ShardedTensor`` with its process-group state, shard metadata, tensor properties,
    memory format and sharding specs. (Unpickling a ``ShardedTensor`` needs the group.)"""
    from torch.distributed._shard import metadata, sharding_spec
    from torch.distributed._shard.sharded_tensor import api, shard
    from torch.distributed._shard.sharded_tensor import metadata as st_metadata
    from torch.distributed._shard.sharding_spec import chunk_sharding_spec
    from torch.distributed.remote_device import _remote_device
    sharded = api.ShardedTensor
    types = [sharded, sharded.ProcessGroupState, shard.Shard, metadata.ShardMetadata,
             st_metadata.ShardedTensorMetadata, st_metadata.TensorProperties,
             st_metadata.MEM_FORMAT_ENCODING, sharding_spec.EnumerableShardingSpec,
             chunk_sharding_spec.ChunkShardingSpec, _remote_device]
    with torch.serialization.safe_globals(types), \
            allowed_attributes([(sharded, 'ProcessGroupState')]):
        yield


# ``--strategy`` values and mmengine's strategy names, mapped to codetr's strategies.
STRATEGY_CHOICES = {'fsdp': 'CodetrFSDPStrategy', 'ddp': 'CodetrDDPStrategy'}
_MMENGINE_NAMES = {'FSDPStrategy': 'CodetrFSDPStrategy', 'DDPStrategy': 'CodetrDDPStrategy'}
KNOWN_RUNNERS = ('Runner', 'CodetrRunner', 'FlexibleRunner', 'CodetrFlexibleRunner')
# The model wrapper ``--strategy fsdp`` uses unless the config's strategy names one.
DEFAULT_FSDP_WRAPPER = dict(type='MMFullyShardedDataParallel',
                            auto_wrap_policy=dict(type=f'{SCOPE}.layer_wrap_policy'))


def configure_strategy(cfg, name: str | None, launcher: str) -> None:
    """Select ``FlexibleRunner`` training with codetr's strategy ``name`` (in place).

    ``name`` is a key of ``STRATEGY_CHOICES`` or None (keep the config's choice). A config
    may also set ``strategy=dict(type='FSDPStrategy', ...)`` itself: mmengine's names are
    replaced by codetr's (a superset, see the module docstring) and its options are kept.
    """
    if name is not None and name not in STRATEGY_CHOICES:
        raise ValueError(f'--strategy {name!r} is not one of {sorted(STRATEGY_CHOICES)}')
    strategy = dict(cfg.get('strategy') or {})
    if name is None and not strategy:
        return
    kind = str(strategy.get('type', '')).split('.')[-1]
    kind = _MMENGINE_NAMES.get(kind, kind)
    if name is not None and kind and kind != STRATEGY_CHOICES[name]:
        strategy = {}  # the config's options belong to another strategy
    kind = STRATEGY_CHOICES[name] if name is not None else kind
    if kind not in STRATEGY_CHOICES.values():
        raise ValueError(f'strategy type {strategy.get("type")!r} is not one of codetr\'s '
                         f'{sorted(STRATEGY_CHOICES.values())}')
    if launcher == 'none':
        raise ValueError(f'{kind} needs a distributed launch: tools/dist_train.sh CONFIG N '
                         f'--strategy {name or "fsdp"} (N processes, 1 or more)')
    if kind == 'CodetrFSDPStrategy':
        strategy.setdefault('model_wrapper', dict(DEFAULT_FSDP_WRAPPER))
    cfg.strategy = dict(strategy, type=f'{SCOPE}.{kind}')
    # mmengine's and codetr's runners become CodetrFlexibleRunner; a runner of the user's
    # own (a FlexibleRunner subclass, presumably) is kept.
    if cfg.get('runner_type', 'Runner').split('.')[-1] in KNOWN_RUNNERS:
        cfg.runner_type = 'CodetrFlexibleRunner'
