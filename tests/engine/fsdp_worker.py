"""One rank of the sharded-training comparison (run by torchrun from test_fsdp.py).

    torchrun --nproc_per_node 2 tests/engine/fsdp_worker.py CONFIG OUT RESUME_FROM [--full]

Trains CONFIG through ``tools/train.py``'s command line (``--launcher pytorch``) in this
process, one run after the other:

- ``ddp``: ``--strategy ddp`` (the unsharded reference);
- ``fsdp``: ``--strategy fsdp``, sharded ``rankN.pth`` checkpoints;
- ``fsdp_resumed``: a fresh runner resuming ``OUT/fsdp/RESUME_FROM``;
- with ``--full``: ``fsdp_full`` (``state_dict_cfg='full'``), ``fsdp_full_resumed``, and
  ``fsdp_loaded`` / ``ddp_loaded``: sharded and DDP runs starting from the full file as
  ``load_from``.

Each run's ``RecordTrainStepsHook`` writes ``steps_rank{r}.json`` into its work dir; this
script adds ``OUT/shards_rank{r}.json``: the numel of this rank's shard of the sharded
checkpoint next to the model's parameter count.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from codetr.engine import shutdown_distributed  # noqa: E402
from codetr.engine.strategies import _sharded_tensor_loading  # noqa: E402
from codetr.registry import RUNNERS  # noqa: E402
from codetr.utils import register_all_modules  # noqa: E402


def load_train_tool():
    spec = importlib.util.spec_from_file_location('train_tool', ROOT / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(tool, config: str, work_dir: Path, strategy: str, *options: str) -> None:
    args = tool.parse_args([config, '--launcher', 'pytorch', '--strategy', strategy,
                            '--work-dir', str(work_dir), *options])
    cfg = tool.build_cfg(args)
    # A new name per run: mmengine keys its logger and message hub by it.
    cfg.experiment_name = f'{work_dir.name}_{uuid.uuid4().hex[:8]}'
    RUNNERS.build(cfg).train()


def shard_sizes(checkpoint: Path, model_numel: int) -> dict:
    """Numel of this rank's flat-parameter shards in a sharded checkpoint."""
    with _sharded_tensor_loading():
        state = torch.load(checkpoint / f'rank{dist.get_rank()}.pth', weights_only=True)
    local = sum(v.local_tensor().numel() for k, v in state['state_dict'].items()
                if k.endswith('_flat_param'))
    return dict(local_numel=local, model_numel=model_numel, keys=sorted(state))


def main() -> None:
    config, out, resume_from = sys.argv[1:4]
    full = '--full' in sys.argv[4:]
    out = Path(out)
    register_all_modules()
    tool = load_train_tool()
    train(tool, config, out / 'ddp', 'ddp')
    train(tool, config, out / 'fsdp', 'fsdp')
    train(tool, config, out / 'fsdp_resumed', 'fsdp', '--resume',
          str(out / 'fsdp' / resume_from))
    if full:
        train(tool, config, out / 'fsdp_full', 'fsdp',
              '--cfg-options', 'strategy.state_dict_cfg=full')
        train(tool, config, out / 'fsdp_full_resumed', 'fsdp', '--resume',
              str(out / 'fsdp_full' / resume_from), '--cfg-options',
              'strategy.state_dict_cfg=full')
        # An ordinary single-file checkpoint as load_from, into a sharded and a DDP model.
        weights = f'load_from={out / "fsdp_full" / resume_from}'
        train(tool, config, out / 'fsdp_loaded', 'fsdp', '--cfg-options', weights)
        train(tool, config, out / 'ddp_loaded', 'ddp', '--cfg-options', weights)
    from mmengine.config import Config

    from codetr.registry import MODELS
    model = MODELS.build(Config.fromfile(config).model)
    sizes = shard_sizes(out / 'fsdp' / resume_from, sum(p.numel() for p in model.parameters()))
    (out / f'shards_rank{dist.get_rank()}.json').write_text(json.dumps(sizes))
    shutdown_distributed()


if __name__ == '__main__':
    main()
