"""Training stops on numbers that are not finite, and says where.

Features are checked once before the first step (:func:`check_features`). The loss of each step is tested on
the device without waiting for it (a NaN or infinity is remembered with its step); the verdict is fetched every
``check_every`` steps and at the end of each epoch, before anything of that epoch is saved. A non-finite loss stops the run with a message naming the epoch and the step: the checkpoints of
the last complete epoch stay as they were, so the run folder is in the same state as a run killed after that
epoch, which ``--resume`` continues.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from meid_bench.build.features.audit import StoreAudit, audit_store, check_audit_finite
from meid_bench.errors import MeidBenchError

CHECK_EVERY = 50  # steps between fetches of the verdict: one device synchronisation each


def check_features(store) -> StoreAudit:
    """Refuse a feature store holding NaN or infinity, before training; returns the store's audit (its sha256 for
    run.json), made in the same read of the file (see :mod:`meid_bench.build.features.audit`)."""
    audit = audit_store(store)
    check_audit_finite(store, audit)
    return audit


def check_batches_fit(recipe, dim: int, eval_batch_size: int, device: torch.device) -> None:
    """Refuse, before the run starts, a training or evaluation batch larger than the memory of the device
    (``batch_size`` x ``data.train_frames`` x feature dimension float32 values, and likewise for evaluation)."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for what, batch, frames in (("batch_size x data.train_frames", recipe.batch_size, recipe.data.train_frames),
                                ("eval batch x data.eval_frames", eval_batch_size, recipe.data.eval_frames)):
        size = 4 * batch * frames * dim
        if size > total:
            raise MeidBenchError(f"recipe: one batch of {what} x {dim} features takes {size:.3g} bytes, more than "
                                 f"the {total:.3g} bytes of {device.type} memory; lower them")


class NonFiniteLoss(MeidBenchError):
    """The training loss became NaN or infinite."""


class LossWatch:
    """Remembers the first step of an epoch whose loss is not finite (on the loss's device)."""

    def __init__(self, run: str, check_every: int = CHECK_EVERY) -> None:
        self.run, self.check_every = run, int(check_every)
        self._first_bad: torch.Tensor | None = None
        self._value: torch.Tensor | None = None

    def step(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        """Record step ``step`` (0-based) of epoch ``epoch``; raise on a bad step already seen, now and then."""
        loss = loss.detach()
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self._value = torch.zeros((), dtype=torch.float32, device=loss.device)
        bad = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(bad, torch.full_like(self._first_bad, step), self._first_bad)
        self._value = torch.where(bad, loss.float(), self._value)
        if (step + 1) % self.check_every == 0:
            self.check(epoch)

    def check(self, epoch: int, last_good_epoch: int | None = None) -> None:
        """Raise :class:`NonFiniteLoss` if a step of this epoch had a non-finite loss."""
        if self._first_bad is None:
            return
        step = int(self._first_bad)
        if step >= 0:
            kept = (f"checkpoints/last.pt keeps epoch {last_good_epoch + 1}" if last_good_epoch is not None
                    and last_good_epoch >= 0 else "no epoch was complete, so no checkpoint was written")
            raise NonFiniteLoss(f"{self.run}: training stopped: the loss is {float(self._value)} at epoch {epoch + 1}, "
                                f"step {step + 1}; {kept}. Lower optim.lr (or set optim.clip_grad_norm) and start "
                                "a new run with --out, or check the features; --resume with the same options would "
                                "repeat the same steps")

    def end_epoch(self, epoch: int, last_good_epoch: int | None = None) -> None:
        """The verdict for the whole epoch (call before saving it); then start afresh for the next one."""
        self.check(epoch, last_good_epoch)
        self._first_bad = self._value = None


@contextmanager
def out_of_memory_as_error(what: str) -> Iterator[None]:
    """Turn running out of host or device memory inside the block into a one-line error: a recipe or option asked
    for more than the machine has (``model.hidden``, ``batch_size``, ``data.train_frames``), not a bug."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise MeidBenchError(f"{what}: out of device memory ({str(exc).splitlines()[0][:100]}); lower batch_size, "
                             "data.train_frames, data.eval_frames or the model's size, or use --resident no") from None
    except MemoryError:
        raise MeidBenchError(f"{what}: out of memory; lower batch_size, data.train_frames, data.eval_frames or the "
                             "model's size") from None
    except RuntimeError as exc:
        if "DefaultCPUAllocator: can't allocate memory" not in str(exc):  # torch's host allocator failing
            raise
        raise MeidBenchError(f"{what}: out of memory ({str(exc).split('DefaultCPUAllocator: ')[-1][:100]}); lower "
                             "batch_size, data.train_frames, data.eval_frames or the model's size") from None
