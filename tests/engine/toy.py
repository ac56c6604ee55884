"""Tiny deterministic modules for engine and tool tests: a model, a dataset and a metric.

They are registered in codetr's registries so test configs can name them, e.g.
``model=dict(type='ToyRegressor')`` with ``custom_imports=dict(imports=['tests.engine.toy'])``.
Everything is a few dozen floats: a run of several epochs takes well under a second.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import torch
from mmengine.dataset import BaseDataset
from mmengine.dist import get_rank
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper
from torch import nn

from codetr.registry import DATASETS, HOOKS, METRICS, MODELS

NUM_FEATURES = 4


@MODELS.register_module()
class ToyRegressor(BaseModel):
    """A linear regressor ``y = w . x + b`` trained with a squared-error loss.

    ``nan_at_calls`` lists 1-based forward-call numbers in loss mode whose ``loss_reg`` is
    made NaN, to exercise the non-finite loss guard.
    """

    def __init__(self, nan_at_calls: Sequence[int] = (), data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.linear = nn.Linear(NUM_FEATURES, 1)
        self.nan_at_calls = set(nan_at_calls)
        self._loss_calls = 0

    def forward(self, inputs: torch.Tensor, data_samples: list | None = None,
                mode: str = 'tensor'):
        """``inputs``: (B, 4) features; ``data_samples``: (B,) targets in loss mode."""
        pred = self.linear(inputs).squeeze(-1)  # (B,)
        if mode == 'loss':
            self._loss_calls += 1
            target = torch.as_tensor(data_samples, dtype=pred.dtype)
            loss_reg = ((pred - target) ** 2).mean()
            if self._loss_calls in self.nan_at_calls:
                loss_reg = loss_reg * float('nan')
            return dict(loss_reg=loss_reg, loss_aux=0.1 * pred.abs().mean())
        if mode == 'predict':
            return [dict(pred=p.detach(), target=t) for p, t in zip(pred, data_samples)]
        return pred


@MODELS.register_module()
class ToyShardedNet(BaseModel):
    """A two-layer regressor with what matters to sharded training: several ``nn.Linear``
    units, a 0-d parameter (like the ``Scale`` of ATSS heads) and random draws in the
    forward pass (input noise, like the denoising queries), so a resumed run reproduces an
    uninterrupted one only if the random state is restored."""

    def __init__(self, hidden: int = 16, noise: float = 0.1,
                 data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.fc1 = nn.Linear(NUM_FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.noise = noise

    def forward(self, inputs: torch.Tensor, data_samples: list | None = None,
                mode: str = 'tensor'):
        """``inputs``: (B, 4); ``data_samples``: (B,) targets in loss mode."""
        noisy = inputs + self.noise * torch.randn_like(inputs) if self.training else inputs
        pred = self.fc2(torch.relu(self.fc1(noisy))).squeeze(-1) * self.scale  # (B,)
        if mode == 'loss':
            target = torch.as_tensor(data_samples, dtype=pred.dtype)
            return dict(loss_reg=((pred - target) ** 2).mean())
        if mode == 'predict':
            return [dict(pred=p.detach(), target=t) for p, t in zip(pred, data_samples)]
        return pred


@DATASETS.register_module()
class ToyRegressionDataset(BaseDataset):
    """``length`` samples with fixed features ``x_i`` and targets ``sum(x_i) + 1``.

    Samples depend only on their index, so every rank and every run sees the same data.
    """

    METAINFO = dict(classes=('toy',))

    def __init__(self, length: int = 8, **kwargs):
        self.length = length
        kwargs.setdefault('serialize_data', False)
        super().__init__(lazy_init=False, **kwargs)

    def load_data_list(self) -> list[dict]:
        data = []
        for i in range(self.length):
            x = torch.linspace(-1, 1, NUM_FEATURES) * (i + 1) / self.length
            data.append(dict(inputs=x, data_samples=float(x.sum() + 1.0)))
        return data

    def prepare_data(self, idx: int) -> dict:
        # Only the model's inputs: BaseDataset would add 'sample_idx', which forward rejects.
        info = self.get_data_info(idx)
        return dict(inputs=info['inputs'], data_samples=info['data_samples'])


@METRICS.register_module()
class ToyMSEMetric(BaseMetric):
    """Mean squared error and sample count of ToyRegressor predictions."""

    default_prefix = 'toy'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append((float(sample['pred']), float(sample['target'])))

    def compute_metrics(self, results: list) -> dict[str, float]:
        errors = [(p - t) ** 2 for p, t in results]
        return dict(mse=sum(errors) / len(errors), count=float(len(errors)))


@HOOKS.register_module()
class DumpParamsHook(Hook):
    """After training, save this rank's parameters to ``work_dir/params_rank{rank}.pt``."""

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, f'{runner.work_dir}/params_rank{get_rank()}.pt')


@HOOKS.register_module()
class RecordTrainStepsHook(Hook):
    """Write each iteration's loss and gradient norm to ``work_dir/steps_rank{rank}.json``."""

    def __init__(self):
        self.steps: list[dict] = []

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        hub = runner.message_hub
        norm = hub.get_scalar('train/grad_norm').current() if 'train/grad_norm' in \
            hub.log_scalars else None
        self.steps.append(dict(iter=runner.iter, loss=float(outputs['loss']),
                               grad_norm=None if norm is None else float(norm)))

    def after_run(self, runner) -> None:
        with open(f'{runner.work_dir}/steps_rank{get_rank()}.json', 'w') as f:
            json.dump(self.steps, f)


class SimulatedCrash(RuntimeError):
    """Raised by InterruptAfterEpochHook to stop a run the way a killed job would."""


@HOOKS.register_module()
class InterruptAfterEpochHook(Hook):
    """Crash the run after ``epoch`` (1-based) ends and its checkpoint has been written."""

    priority = 'LOWEST'  # after the checkpoint hook (VERY_LOW)

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:
            raise SimulatedCrash(f'simulated crash after epoch {self.epoch}')


def toy_config(work_dir: str, max_epochs: int = 2, length: int = 8, batch_size: int = 2,
               val_interval: int | None = None, **overrides) -> dict:
    """A complete Runner config for the toy modules (SGD, seed 0, 1 checkpoint per epoch).

    Validation runs every ``val_interval`` epochs (default: once, at the end).
    """
    loader = dict(batch_size=batch_size, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'),
                  dataset=dict(type='ToyRegressionDataset', length=length))
    val_loader = dict(loader, sampler=dict(type='DefaultSampler', shuffle=False))
    cfg = dict(
        default_scope='codetr',
        runner_type='CodetrRunner',
        work_dir=work_dir,
        model=dict(type='ToyRegressor'),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs,
                       val_interval=val_interval or max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=[dict(type='MultiStepLR', milestones=[1], gamma=0.5, by_epoch=True)],
        val_dataloader=val_loader, val_cfg=dict(), val_evaluator=dict(type='ToyMSEMetric'),
        test_dataloader=val_loader, test_cfg=dict(), test_evaluator=dict(type='ToyMSEMetric'),
        default_hooks=dict(
            checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=2),
            nonfinite_loss=dict(type='NonFiniteLossHook', max_nonfinite_skips=0),
            logger=dict(type='DistSafeLoggerHook', interval=1)),
        randomness=dict(seed=0),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
        # Unique: mmengine names its logger/visualizer instances by timestamp otherwise, and
        # two runners built in the same second would share them.
        experiment_name=f'toy_{uuid.uuid4().hex[:12]}',
    )
    cfg.update(overrides)
    return cfg


def toy_config_text(work_dir: str, **kwargs) -> str:
    """``toy_config`` as the text of a config file that imports this module."""
    cfg = toy_config(work_dir, **kwargs)
    cfg['custom_imports'] = dict(imports=['tests.engine.toy'], allow_failed_imports=False)
    return '\n'.join(f'{key} = {value!r}' for key, value in cfg.items()) + '\n'

