"""``AtomicCheckpointHook``: mmengine's CheckpointHook that deletes old files only after a save."""
from __future__ import annotations

import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from codetr.registry import HOOKS

from ..checkpoint import atomic_write_text


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """Saves like ``CheckpointHook`` (same arguments) but never loses the last good checkpoint.

    mmengine's hook removes the oldest checkpoint (when ``max_keep_ckpts`` is reached)
    *before* writing the new one; if the save then fails (disk full, job killed), fewer
    good checkpoints remain than promised. Here the order is: write the new checkpoint
    (atomically, via ``CodetrRunner.save_checkpoint``), rewrite the ``last_checkpoint``
    pointer (atomically), and only then remove the oldest file. With ``save_best``, the
    previous best checkpoint is likewise removed only after the new best one is written.
    """

    def _save_best_checkpoint(self, runner, metrics: dict) -> None:
        # mmengine removes the old best file before saving the new one; route its removals
        # through a recorder and replay them only once every save has succeeded.
        backend, deferred = self.file_backend, _DeferredRemovals(self.file_backend)
        self.file_backend = deferred
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        # One key indicator keeps best_ckpt_path, several keep best_ckpt_path_dict.
        current = {getattr(self, 'best_ckpt_path', None), self.last_ckpt,
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        deferred.replay(keep=current)

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        stale_step = self._rotate_keep_ids(runner, step)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if stale_step is not None:
            self._remove(self.filename_tmpl.format(stale_step))

    def _rotate_keep_ids(self, runner, step: int) -> int | None:
        """Record ``step`` among the kept checkpoints; return the step that falls out."""
        if self.max_keep_ckpts <= 0:
            return None
        # A regular and a best-checkpoint save may both land on the same step.
        if self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step:
            return None
        stale = None
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            stale = self.keep_ckpt_ids.popleft()
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return stale

    def _remove(self, filename: str) -> None:
        path = self.file_backend.join_path(self.out_dir, filename)
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # sharded (e.g. DeepSpeed) checkpoints
            self.file_backend.rmtree(path)


class _DeferredRemovals:
    """A file backend stand-in that records ``remove``/``rmtree`` and forwards the rest."""

    def __init__(self, backend):
        self._backend = backend
        self._removals: list[tuple[str, str]] = []

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def remove(self, path: str) -> None:
        self._removals.append(('remove', path))

    def rmtree(self, path: str) -> None:
        self._removals.append(('rmtree', path))

    def replay(self, keep: set) -> None:
        """Carry out the recorded removals, except of paths in ``keep`` (just rewritten)."""
        for method, path in self._removals:
            if path not in keep:
                getattr(self._backend, method)(path)
