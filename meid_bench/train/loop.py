"""`meid-bench train`: one readable training loop.

Per epoch: draw the recipe's batch streams (instance, plus class-balanced for MEID's expert 2), optionally mix the
instance batch (mixup, FrameStack), sum the model's named losses, clip, step; then evaluate on the validation split
and keep the best checkpoint by validation mAP. After the last epoch the best checkpoint predicts val and test once,
and the evaluator scores the test predictions (the test set never chooses anything).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
import numpy as np
import torch

from meid_bench._version import __version__
from meid_bench.build.features import default_feature_path
from meid_bench.build.features.store import FeatureStore
from meid_bench.build.split_io import Split, load_split
from meid_bench.devices import resolve_device
from meid_bench.errors import MeidBenchError, warn
from meid_bench.evaluator import Evaluator, write_predictions
from meid_bench.fileio import read_record, write_json_atomic, write_text_atomic
from meid_bench.logs import log_lines_to
from meid_bench.records import read_log, shown_epoch
from meid_bench.metrics import average_precision
from meid_bench.models import STREAM_INSTANCE, compute_training_step, unwrap_model
from meid_bench.runs import RUN_FORMAT, write_run_record
from meid_bench.run_lock import LOCK_NAME, acquire_run_lock, refuse_if_locked
from meid_bench.train.resolve import check_run_numbers, resolve_run_recipe
from meid_bench.train.run_folder import check_run_outputs, folder_state
from meid_bench.train.batches import EvalStream
from meid_bench.train.checkpoint import check_restorable, check_state_dict, load_checkpoint, save_checkpoint
from meid_bench.train.config import Recipe
from meid_bench.train.experiment import RunPlace, build_experiment
from meid_bench.train.stage import read_starting_point
from meid_bench.train.distributed import DistributedContext, init_distributed
from meid_bench.train.environment import command_line, device_record, software_versions
from meid_bench.train.guard import LossWatch, check_batches_fit, check_features, out_of_memory_as_error

logger = logging.getLogger(__name__)

# Steps x lr before the first decay under which a schedule is flagged: CharadesLT with the reference schedule
# (1,110 x 1e-4 = 0.11) did not learn; its own schedule (1,110 x 1e-3 = 1.1) and VideoLT's (42,000 x 1e-4) do.
SHORT_SCHEDULE_LR_STEPS = 0.2
# What a run stopped in its first epoch leaves (before checkpoints/last.pt): --resume starts it from scratch.
_FIRST_EPOCH_LEFTOVERS = {"run.json", "log.jsonl", "checkpoints", LOCK_NAME}


@dataclass(frozen=True)
class TrainOptions:
    split: Path
    features: Path | None = None
    recipe: str = "meid"
    out: Path | None = None
    device: str = "auto"
    epochs: int | None = None
    seed: int = 0
    resume: bool = False
    workers: int = 1  # read-ahead threads of the streamed path
    resident: str = "auto"  # "auto", "yes" or "no": hold all frames on the device, or stream them from the store
    memory_share: float = 1.0  # share of the device's memory this run counts on for --resident auto (a sweep: 1/k)
    eval_batch_size: int = 256
    overrides: tuple[str, ...] = ()  # "optim.lr=1e-3", ... applied to the recipe
    progress: bool = False  # a per-epoch progress bar on stderr (the CLI turns it on at a terminal)


def default_run_dir(split: Split, recipe: Recipe, seed: int) -> Path:
    return Path("runs") / f"{split.name}-{recipe.name}-seed{seed}"


def _open_store(split: Split, features: Path | None) -> FeatureStore:
    path = Path(features) if features is not None else default_feature_path(split.path)
    if not path.is_file():
        raise MeidBenchError(f"{path}: no feature store; create one with `meid-bench features synth --split "
                             f"{split.path}` (proxy features) or `meid-bench features pack ...`, or pass --features")
    store = FeatureStore(path)
    store.check_split(split)
    return store


@torch.no_grad()
def predict(model: torch.nn.Module, stream: EvalStream, device: torch.device) -> np.ndarray:
    """Float32 logits [videos, classes] in the stream's order (rank on logits: sigmoid saturates).

    Evaluation runs in float32 whatever the training precision: bf16 logits would hold a few hundred distinct
    values per class and tie the ranking AP depends on.
    """
    core = unwrap_model(model)
    core.eval()
    chunks = []
    for batch in stream:
        chunks.append(core(batch["features"]).logits.float())
    core.train()
    return torch.cat(chunks).cpu().numpy()  # one read-back, not one per batch


class Trainer:
    """Holds what one run needs; :meth:`fit` is the loop."""

    def __init__(self, options: TrainOptions, held: ExitStack | None = None) -> None:
        self.options = options
        # What this run holds until it ends (its run folder's lock): train() closes it; else the lock goes with us.
        self._held = held if held is not None else ExitStack()
        self._log_kept: list[dict] | None = None  # a resumed run's log.jsonl up to its checkpoint
        self.split = load_split(options.split)
        # The benchmark's schedule first, so that --set and --epochs override it (as `sweep` checks it too).
        self.recipe = recipe = resolve_run_recipe(options.recipe, self.split, options.overrides, options.epochs)
        check_run_numbers(options.seed, options.workers, options.eval_batch_size)
        if not 0.0 < options.memory_share <= 1.0:
            raise MeidBenchError(f"--memory-share {options.memory_share}: must be in (0, 1], the share of the "
                                 "device's memory this run counts on (1 when it has the device to itself)")
        self.dist: DistributedContext = init_distributed(resolve_device(options.device))
        self.device = self.dist.device
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)  # pinned memory, cuDNN handles and the allocator on that GPU too
        self.store = _open_store(self.split, options.features)
        self.run_dir = Path(options.out) if options.out is not None else default_run_dir(self.split, recipe,
                                                                                          options.seed)
        self._check_run_dir()
        check_batches_fit(recipe, self.store.dim, options.eval_batch_size, self.device)
        self.store_audit = check_features(self.store)  # its sha256 goes into run.json
        # A second stage reads its first stage's run (checked against this split, store and model) before the seed:
        # rebuilding that model draws from torch's generator.
        self.start = (read_starting_point(recipe, self.run_dir, self.split, self.features_sha256, options.seed)
                      if recipe.second_stage else None)
        torch.manual_seed(options.seed + self.dist.rank)

        split = self.split
        place = RunPlace(self.device, options.seed, self.dist.rank, self.dist.world, options.workers,
                         options.eval_batch_size, options.resident, options.memory_share)
        experiment = build_experiment(recipe, split, self.store, place, self.start)
        self.model, self.criterion, self.mix = experiment.model, experiment.criterion, experiment.mix
        self.optimizer, self.scheduler = experiment.optimizer, experiment.scheduler
        self.streams, self.val, self.test = experiment.streams, experiment.val, experiment.test
        self.train_eval, self.resident = experiment.train_eval, experiment.resident
        self.val_evaluator = Evaluator(split, "val")
        self.start_epoch, self.best = 0, {"epoch": -1, "val_mAP": -1.0}
        self._rank_rng: list[dict] = []
        if self.resume:
            last = load_checkpoint(self.run_dir / "checkpoints" / "last.pt", recipe.model.name,
                                   split.accepted_checksums,
                                   expect_input_dim=self.store.dim, expect_num_classes=split.num_classes)
            if self.dist.is_main:  # after the checkpoint's own checks, which name a wrong store more precisely
                self._check_same_features()
            self._restore(last)
        self.wrapped = self.dist.wrap(self.model)
        self._lock_run_dir()

    # -- the loop ---------------------------------------------------------------------------------------------
    def fit(self) -> Path:
        recipe, device = self.recipe, self.device
        if self.dist.is_main:
            if not self.resume:  # a fresh start (maybe of a run stopped in its first epoch): no stale log lines
                (self.run_dir / "log.jsonl").unlink(missing_ok=True)
            elif self._log_kept is not None:
                write_text_atomic(self.run_dir / "log.jsonl",
                                  "".join(json.dumps(record) + "\n" for record in self._log_kept))
            self._write_run_json()
            self._warn_short_schedule()
        for epoch in range(self.start_epoch, recipe.epochs):
            started = time.perf_counter()
            self.criterion.set_epoch(epoch)
            totals: dict[str, torch.Tensor] = {}  # summed on the device (float64): no read-back per step
            logged: dict[str, torch.Tensor] = {}  # values the model logs (MEID's distillation distance), likewise
            steps = 0
            watch = LossWatch(str(self.run_dir))
            batch_iterator = zip(*(stream.epoch(epoch) for stream in self.streams.values()))
            for step_batches in self._progress(batch_iterator, epoch):
                batches = dict(zip(self.streams, step_batches))
                if self.mix is not None:
                    instance = batches[STREAM_INSTANCE]
                    mixed = self.mix(instance["features"], instance["target"], instance.get("mask"))
                    batches[STREAM_INSTANCE] = {"features": mixed.features, "target": mixed.targets,
                                                **({"mask": mixed.mask} if mixed.mask is not None else {})}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    step = compute_training_step(self.wrapped, batches, self.criterion)
                losses = step.losses
                loss = sum(losses.values())
                watch.step(loss, epoch, steps)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.optim.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.optim.clip_grad_norm)
                self.optimizer.step()
                for name, value in losses.items():
                    value = value.detach().double()
                    totals[name] = totals[name] + value if name in totals else value
                for name, value in step.logged.items():
                    value = value.detach().double()
                    logged[name] = logged[name] + value if name in logged else value
                steps += 1
            watch.end_epoch(epoch, last_good_epoch=epoch - 1)  # before anything of this epoch is saved
            self.scheduler.step()
            record = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "steps": steps,
                      **{f"loss_{k}": float(v) / max(steps, 1) for k, v in totals.items()},
                      **{k: float(v) / max(steps, 1) for k, v in logged.items()},
                      "train_seconds": round(time.perf_counter() - started, 3)}
            if self.train_eval is not None:
                train_ap = average_precision(predict(self.wrapped, self.train_eval, device),
                                             self.train_eval.dataset.targets)
                self.mix.update_class_ap(train_ap)
            self._epoch_done(epoch, record)
        self.dist.barrier()
        if self.dist.is_main:
            self._finish()
        self.dist.barrier()  # every rank leaves the process group together, once rank 0 has written the run
        self.dist.close()
        return self.run_dir

    def _progress(self, batches: Iterator, epoch: int) -> Iterator:
        if not (self.options.progress and self.dist.is_main):
            yield from batches
            return
        steps = self.streams[STREAM_INSTANCE].steps_per_epoch()
        with click.progressbar(batches, length=steps, label=f"epoch {epoch + 1}/{self.recipe.epochs}",
                               file=sys.stderr, show_eta=True) as bar:
            yield from bar

    def _warn_short_schedule(self) -> None:
        """The reference schedule counts epochs of a large benchmark: on a small split it barely trains."""
        optim = self.recipe.optim
        first_decay = min([m for m in optim.milestones if m > 0] + [self.recipe.epochs])
        steps = self.streams[STREAM_INSTANCE].steps_per_epoch() * first_decay
        if steps * optim.lr < SHORT_SCHEDULE_LR_STEPS:
            if self.recipe.schedule_from == self.split.name:  # the benchmark's schedule, then --epochs / --set
                why = (f"the recipe's `schedules: {self.split.name}:` was applied, then changed by --epochs or --set; "
                       "fine for a quick try")
            else:
                why = (f"the recipe has no schedule for this benchmark: add one under `schedules: {self.split.name}:`, "
                       "docs/models.md")
            logger.warning(f"this schedule makes {steps} steps at lr {optim.lr:g} before its first decay; on a "
                           f"split this size it may barely train ({why})")

    # -- per-epoch bookkeeping ---------------------------------------------------------------------------------
    def _epoch_done(self, epoch: int, record: dict) -> None:
        """Every rank: hand this rank's generators to rank 0, which validates and writes the checkpoints."""
        # Each rank draws its own dropout masks, distillation frames and mixing permutations, and resumes from its
        # own states.
        self._rank_rng = self.dist.gather(self._rng_state())
        if self.dist.is_main:
            self._end_of_epoch(epoch, record)

    def _end_of_epoch(self, epoch: int, record: dict) -> None:
        last = epoch == self.recipe.epochs - 1
        if (epoch + 1) % self.recipe.eval_every == 0 or last:
            scores = predict(self.wrapped, self.val, self.device)
            result = self.val_evaluator.eval(self.val.video_ids, scores)
            record.update({f"val_{k}": result[k] for k in ("mAP", "mAP_head", "mAP_medium", "mAP_tail")})
            if result["mAP"] > self.best["val_mAP"]:
                self.best = {"epoch": epoch, "val_mAP": result["mAP"]}
                save_checkpoint(self.run_dir / "checkpoints" / "best.pt", self._payload(epoch))
        save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self._payload(epoch))
        with open(self.run_dir / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k.startswith(("loss_", "val_mAP")))
        logger.info(f"epoch {epoch + 1}/{self.recipe.epochs}: {shown} ({record['train_seconds']:.1f}s)")

    def _finish(self) -> None:
        best_path = self.run_dir / "checkpoints" / "best.pt"
        best = load_checkpoint(best_path, self.recipe.model.name, self.split.accepted_checksums,
                               expect_input_dim=self.store.dim, expect_num_classes=self.split.num_classes)
        check_state_dict(best["model"], self.model, best_path, "model")
        self.model.load_state_dict(best["model"])
        for subset, stream in (("val", self.val), ("test", self.test)):
            scores = predict(self.model, stream, self.device)
            write_predictions(self.run_dir / "predictions" / f"{subset}.parquet", stream.video_ids, scores,
                              self.split.classes["class_key"].tolist(), force=True)
            result = Evaluator(self.split, subset).eval(stream.video_ids, scores)
            result["best_epoch"] = best["epoch"]
            name = "metrics.json" if subset == "test" else "metrics_val.json"
            write_json_atomic(self.run_dir / name, result)
        test = json.loads((self.run_dir / "metrics.json").read_text())
        logger.info(f"best epoch {shown_epoch(best['epoch'])} (val mAP {_fmt(self.best['val_mAP'])}); test mAP "
                    f"{_fmt(test['mAP'])} (head {_fmt(test['mAP_head'])}, medium {_fmt(test['mAP_medium'])}, tail "
                    f"{_fmt(test['mAP_tail'])}); run in {self.run_dir}")

    # -- run folder and checkpoints ---------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        check_run_outputs(self.run_dir, self.split, self.store.path, self.options.recipe)
        if self.dist.is_main:  # a run being written by another process: say so now, before looking any further
            refuse_if_locked(self.run_dir, "resume it or start another run")
        self._state_checked = folder_state(self.run_dir)
        exists = self.run_dir.exists() and any(p.name != LOCK_NAME for p in self.run_dir.iterdir())
        self.resume = self.options.resume
        last = self.run_dir / "checkpoints" / "last.pt"
        if last.exists() and not last.is_file():
            raise MeidBenchError(f"{last}: is not a file; the run folder is damaged, start the run in another --out")
        if self.resume and not last.is_file():
            # Killed in its first epoch: run.json (and maybe best.pt) but no last.pt. Start it again from scratch.
            others = sorted(p.name for p in self.run_dir.iterdir() if p.name not in _FIRST_EPOCH_LEFTOVERS) \
                if exists else []
            if others:
                raise MeidBenchError(f"{self.run_dir}: nothing to resume (no checkpoints/last.pt), and the folder "
                                     f"holds {others[0]!r}, which a run stopped in its first epoch does not leave; "
                                     "start the run in another --out")
            warn(f"{self.run_dir}: no checkpoint yet (the run stopped in its first epoch); --resume starts it from "
                 "scratch")
            self.resume = False
        elif not self.resume and exists:
            raise MeidBenchError(f"{self.run_dir}: the run folder already exists; pass --resume to continue it, or "
                                 "--out to start a new run elsewhere")

    def _lock_run_dir(self) -> None:
        """Take the run folder's lock for the rest of the run (rank 0 writes the folder). Everything above only read
        it, so a second writer that started at the same moment is caught here: whoever locks second is refused, and
        a folder changed since it was checked (a writer that finished in between) is refused too."""
        if not self.dist.is_main:
            return
        lock = acquire_run_lock(self.run_dir, "meid-bench train")
        self._held.callback(lock.release)
        if folder_state(self.run_dir) != self._state_checked:
            lock.release()
            raise MeidBenchError(f"{self.run_dir}: the run folder changed while this run was starting (another "
                                 "writer?); run the command again")

    def _payload(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "recipe": self.recipe.to_dict(),
            "split_checksum": self.split.checksum,
            "input_dim": self.store.dim,
            "num_classes": self.split.num_classes,
            "seed": self.options.seed,
            "class_groups": self.split.classes["group"].astype(str).tolist(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "mix": self.mix.state_dict() if self.mix is not None else {},
            "torch_rng": torch.get_rng_state(),
            # Rank 0's states now (after validation, which draws nothing, but may one day), the others' as gathered
            # at the end of the epoch's training: where each rank goes on from.
            "rng_per_rank": [self._rng_state(), *self._rank_rng[1:]],
            "best": dict(self.best),
            "meid_bench_version": __version__,
        }

    def _restore(self, payload: dict) -> None:
        if payload["recipe"] != self.recipe.to_dict() or payload["seed"] != self.options.seed:
            raise MeidBenchError(f"{self.run_dir}: the run was started with another recipe, --epochs or --seed; "
                                 "resume it with the same options")
        check_restorable(payload, self.run_dir / "checkpoints" / "last.pt", self.model, self.optimizer,
                         self.scheduler, self.mix)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self._restore_rng(payload)
        self.start_epoch, self.best = payload["epoch"] + 1, dict(payload["best"])
        log = self.run_dir / "log.jsonl"
        if log.is_file():  # drop records of epochs after the checkpoint, and a line cut off by the interruption
            # (read and checked now, written once the run folder is locked: fit())
            self._log_kept = [record for record in read_log(log) if record["epoch"] <= payload["epoch"]]

    def _rng_state(self) -> dict:
        """This process's random generators as they stand: torch's CPU generator, the CUDA generator of the
        training GPU (dropout, the distillation's frame draws and the random-frames ablation draw there) and the
        batch mixing's. Nothing draws from numpy's or Python's global generators; the samplers and frame draws
        use generators made afresh from (seed, epoch, rank) each epoch, so a resumed epoch remakes them."""
        state: dict = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.mix is not None:
            state["mix"] = self.mix.state_dict()
        return state

    def _restore_rng(self, payload: dict) -> None:
        """This rank's generators from the checkpoint (see :meth:`_rng_state`)."""
        ranks = payload.get("rng_per_rank")
        if ranks is None:  # a checkpoint of meid-bench 0.3 or earlier: rank 0's CPU generator only
            if self.mix is not None:
                self.mix.load_state_dict(payload["mix"])
            torch.set_rng_state(payload["torch_rng"])
            return
        if len(ranks) != self.dist.world:
            how = f"torchrun --nproc_per_node {len(ranks)} ..." if len(ranks) > 1 else "one process (no torchrun)"
            raise MeidBenchError(f"{self.run_dir / 'checkpoints' / 'last.pt'}: field 'rng_per_rank': the run was "
                                 f"trained by {len(ranks)} process(es), this is {self.dist.world}; resume it with "
                                 f"{how}")
        mine = ranks[self.dist.rank]
        torch.set_rng_state(mine["torch"])
        if self.device.type == "cuda" and "cuda" in mine:  # a run started on the CPU has no CUDA state to resume
            torch.cuda.set_rng_state(mine["cuda"], self.device)
        if self.mix is not None:
            self.mix.load_state_dict(mine["mix"])

    @property
    def features_sha256(self) -> str:
        """sha256 of the feature store file (read once, with the finiteness check, before training)."""
        return self.store_audit.sha256

    def _check_same_features(self) -> None:
        """A resumed run must continue on the very store it started on (run.json records its sha256)."""
        path = self.run_dir / "run.json"
        if not path.is_file():
            return
        recorded = read_record(path, RUN_FORMAT, None, "start the run again in a new folder").get("features", {})
        expected = recorded.get("sha256") if isinstance(recorded, dict) else None
        if expected is not None and expected != self.features_sha256:
            raise MeidBenchError(f"{path}: features.sha256 {str(expected)[:12]}... is not the sha256 of "
                                 f"{self.store.path} ({self.features_sha256[:12]}...): the feature store changed "
                                 "since the run started; resume with the same store, or start a new run")

    def _write_run_json(self) -> None:
        write_run_record(self.run_dir, {
            "method": self.recipe.name,
            "seed": self.options.seed,
            "split": {"path": str(self.split.path.resolve()), "benchmark": self.split.name,
                      "checksum": self.split.checksum},
            "features": {"path": str(self.store.path.resolve()), "dim": self.store.dim,
                         "simulated": bool(self.store.simulated), "sha256": self.features_sha256},
            "recipe": self.recipe.to_dict(), "world_size": self.dist.world,
            "meid_bench_version": __version__, "torch": torch.__version__,
            "software": software_versions(), "device": device_record(self.device),
            **({"init": self.start.record} if self.start is not None else {}),
        }, command_line(), resumed=self.resume)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def train(options: TrainOptions, echo: Callable[[str], None] | None = None) -> Path:
    """Train one recipe on one split; returns the run folder.

    Progress is logged (``meid_bench.train.loop``: one line per epoch, the final test result); ``echo``, if given,
    also receives each of those lines (a convenience for callers that collect them)."""
    with log_lines_to(echo), out_of_memory_as_error("train"), ExitStack() as held:
        return Trainer(options, held).fit()
