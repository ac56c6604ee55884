"""codetr's registries: children of mmengine's root registries, scope ``codetr``.

Every extension point of the framework is one registry here. A module becomes available
to configs by decorating it with ``@MODELS.register_module()`` (or the registry of its
kind) inside a package listed in that registry's ``locations``; the registry imports
those packages lazily, so a config never fails with "X is not in the registry" just
because nobody imported the file.

A misspelled ``type`` fails at build time with the closest registered names::

    KeyError: "'CoDINOHaed' is not in the codetr::model registry. Did you mean: CoDINOHead?"
"""
from __future__ import annotations

import difflib
from typing import Any

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import INFERENCERS as MMENGINE_INFERENCERS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = 'codetr'


class CodetrRegistry(Registry):
    """An mmengine ``Registry`` whose failed look-ups name the closest registered entries.

    mmengine returns ``None`` for an unknown name and its builder then raises a bare
    ``KeyError``; a lookup here raises at once with suggestions drawn from this registry
    and its ancestors, which is what a user with a typo in a config needs to see.
    """

    def get(self, key: str) -> Any:
        obj = super().get(key)
        if obj is None and isinstance(key, str):
            raise KeyError(self._missing_message(key))
        return obj

    def known_names(self) -> list[str]:
        """Names this registry resolves without a scope prefix: its own and its ancestors'."""
        self.import_from_location()
        names: set[str] = set(self._module_dict)
        parent = self.parent
        while parent is not None:
            names.update(parent._module_dict)
            parent = parent.parent
        return sorted(names)

    def _missing_message(self, key: str) -> str:
        name = key.split('.')[-1]
        known = self.known_names()
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        if not close:  # case-only or prefix typos: 'resnet' -> 'ResNet'
            close = [k for k in known if k.lower() == name.lower() or
                     k.lower().startswith(name.lower()[:4])][:5]
        hint = f' Did you mean: {", ".join(close)}?' if close else ''
        return (f'{key!r} is not in the {self.scope}::{self.name} registry.{hint} '
                f'Check the `type` in your config; modules outside codetr must be imported '
                f'through `custom_imports` before they can be built.')


def _child(name: str, parent: Registry, *locations: str) -> CodetrRegistry:
    return CodetrRegistry(name, parent=parent, scope=SCOPE, locations=list(locations))


# Runner and its components.
RUNNERS = _child('runner', MMENGINE_RUNNERS, 'codetr.engine')
RUNNER_CONSTRUCTORS = _child('runner constructor', MMENGINE_RUNNER_CONSTRUCTORS, 'codetr.engine')
LOOPS = _child('loop', MMENGINE_LOOPS, 'codetr.engine')
HOOKS = _child('hook', MMENGINE_HOOKS, 'codetr.engine', 'codetr.visualization',
                'codetr.models.converters')
LOG_PROCESSORS = _child('log_processor', MMENGINE_LOG_PROCESSORS, 'codetr.engine')
FUNCTIONS = _child('function', MMENGINE_FUNCTIONS, 'codetr.datasets', 'codetr.engine')
# FlexibleRunner's distribution strategies (FSDP, DDP) that also run without CUDA.
STRATEGIES = _child('strategy', MMENGINE_STRATEGIES, 'codetr.engine')

# Data.
DATASETS = _child('dataset', MMENGINE_DATASETS, 'codetr.datasets')
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS, 'codetr.datasets')
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, 'codetr.datasets.transforms')

# Models and the utilities they build from config.
MODELS = _child('model', MMENGINE_MODELS, 'codetr.models')
MODEL_WRAPPERS = _child('model_wrapper', MMENGINE_MODEL_WRAPPERS, 'codetr.engine')
WEIGHT_INITIALIZERS = _child('weight initializer', MMENGINE_WEIGHT_INITIALIZERS, 'codetr.models')
TASK_UTILS = _child('task util', MMENGINE_TASK_UTILS, 'codetr.models')

# Optimisation.
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, 'codetr.engine')
OPTIM_WRAPPERS = _child('optim_wrapper', MMENGINE_OPTIM_WRAPPERS, 'codetr.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child(
    'optimizer wrapper constructor', MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, 'codetr.engine')
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS, 'codetr.engine')

# Evaluation and visualisation.
METRICS = _child('metric', MMENGINE_METRICS, 'codetr.evaluation')
EVALUATOR = _child('evaluator', MMENGINE_EVALUATOR, 'codetr.evaluation')
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS, 'codetr.visualization')
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS, 'codetr.visualization')
VIS_BACKENDS = VISBACKENDS  # the spelling the issue tracker and MMDetection users expect
INFERENCERS = _child('inferencer', MMENGINE_INFERENCERS, 'codetr.apis')
