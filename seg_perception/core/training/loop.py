"""The training loop: resumable checkpoints in a run directory, progress lines with loss and
validation mIoU, best checkpoint kept by validation mIoU, export through core.export."""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..datasets import CAMVID_PARKING_CLASSES
from ..export import export_onnx, save_checkpoint
from ..torch_models import ClassMapModel, build_wrapped_model
from .augment import SegmentationTrainSet, train_transforms
from .config import TrainConfig, model_info
from .data import IGNORE, class_frequencies, has_split, load_split
from .loss import class_weights
from .parking import paint_parking
from .scoring import camvid_lut, evaluate_predictions, format_summary

log = logging.getLogger("seg_perception.train")


# ----------------------------------------------------------------------------- evaluation

def torch_predictor(wrapped: nn.Module, to_camvid: Optional[np.ndarray] = None
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frames -> class ids (``to_camvid``: mapped to CamVid-parking ids for scoring)."""
    def predict(images: np.ndarray) -> np.ndarray:
        wrapped.eval()
        device = next(wrapped.parameters()).device
        with torch.inference_mode():
            ids = wrapped(torch.from_numpy(images).to(device)).cpu().numpy()
        return ids if to_camvid is None else to_camvid[ids]
    return predict


def teacher_probabilities(path: str, target_names, threads: int = 1):
    """The teacher (a project checkpoint) as a function of uint8 frames -> probabilities over
    ``target_names`` [N, C, H, W]: its classes taken by name, a target class it lacks at 0. The
    frames are brought to the teacher's own input size first (a student trained at a smaller
    size gets the labels the teacher makes at its size, resized by the caller)."""
    import cv2

    from ..export import load_checkpoint

    wrapped, info = load_checkpoint(path)
    wrapped.eval()
    index = [info.class_names.index(n) if n in info.class_names else -1 for n in target_names]
    size = (info.input_width, info.input_height)

    def probs(images: np.ndarray) -> np.ndarray:
        if images.shape[2:0:-1] != size and all(size):
            images = np.stack([cv2.resize(im, size, interpolation=cv2.INTER_LINEAR) for im in images])
        with torch.inference_mode():
            p = torch.softmax(wrapped.logits(torch.from_numpy(images)), dim=1).numpy()
        out = np.zeros((p.shape[0], len(index)) + p.shape[2:], np.float32)
        for t, i in enumerate(index):
            if i >= 0:
                out[:, t] = p[:, i]
        return out
    return probs


def _seed_worker(worker_id: int) -> None:
    """Each data worker gets its own augmentation stream (a copy of one would repeat it), from
    the per-worker seed DataLoader derives from the seeded torch generator."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)


def _collate(batch):
    """(images [N, H, W, 3] uint8, labels [N, H, W]) from the dataset's (CHW image, label) pairs."""
    return (torch.stack([im for im, _ in batch]).permute(0, 2, 3, 1),
            torch.stack([lab for _, lab in batch]))


# ----------------------------------------------------------------------------- schedule

def lr_factor(step: int, total_steps: int, warmup_steps: int, progress: Optional[float] = None
              ) -> float:
    """Linear warm-up from 10%, then polynomial (power 0.9) decay to 0 at total_steps (or at
    ``progress`` = 1 when the caller measures progress another way, e.g. by time)."""
    if warmup_steps > 0 and step < warmup_steps:
        return 0.1 + 0.9 * step / warmup_steps
    if progress is None:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 1.0 - progress) ** 0.9


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: adamw, sgd")


# ----------------------------------------------------------------------------- loop

class Trainer:
    """Owns the model, optimizer and run directory. ``run()`` trains (resuming from
    ``<run_dir>/last.pt`` when asked) and returns a result dict."""

    def __init__(self, config: TrainConfig, resume: bool = False,
                 log_line: Optional[Callable[[str], None]] = None) -> None:
        self.cfg = config
        self.resume = resume
        os.makedirs(config.run_dir, exist_ok=True)
        self.log_path = os.path.join(config.run_dir, "train.log")
        self._print = log_line or (lambda line: print(line, flush=True))
        self.last_path = os.path.join(config.run_dir, "last.pt")
        self.best_path = os.path.join(config.run_dir, "best.pt")

    def log(self, line: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        self._print(f"{stamp} {line}")
        with open(self.log_path, "a") as f:
            f.write(f"{stamp} {line}\n")

    # -- data
    def load_data(self) -> None:
        c = self.cfg
        size = tuple(c.input_size)
        t0 = time.perf_counter()
        sets = [load_split(c.data_root, c.layout, s, size, c.limit) for s in c.train_splits]
        self.train_data = sets[0]
        for extra in sets[1:]:
            self.train_data = self.train_data + extra
        self.val_data = (load_split(c.data_root, c.layout, c.val_split, size, c.limit)
                         if c.val_split and has_split(c.data_root, c.layout, c.val_split) else None)
        self.log(f"data: {len(self.train_data)} training frames ({'+'.join(c.train_splits)}), "
                 f"{len(self.val_data) if self.val_data else 0} validation frames "
                 f"({c.layout} layout, {size[1]}x{size[0]}) in {time.perf_counter() - t0:.1f} s")
        self.targets = self._refined_targets() if c.classes != "camvid_parking" else None

    def _refined_targets(self) -> List[np.ndarray]:
        """The training labels in the model's classes, refined by the teacher (cached in the run
        directory: one teacher pass over the frames)."""
        from .refine import cache_key, cached_refined, refine_set

        c = self.cfg
        if not c.teacher:
            raise ValueError(f"--classes {c.classes} needs --teacher: a pretrained Cityscapes model "
                             "(project checkpoint) that refines CamVid's labels")
        names = model_info(c.architecture, c.input_size, c.classes).class_names
        key = cache_key(c.teacher, self.train_data, c.teacher_min_confidence)
        path = os.path.join(c.run_dir, f"refined_{key}.npy")

        def make() -> List[np.ndarray]:
            t0 = time.perf_counter()
            teacher = teacher_probabilities(c.teacher, names)
            out = refine_set(self.train_data, teacher, names, c.teacher_min_confidence,
                             progress=lambda d, n: d % 40 == 0 and self.log(f"refining labels: {d}/{n}"))
            self.log(f"refined {len(out)} frames' labels with {os.path.basename(c.teacher)} in "
                     f"{time.perf_counter() - t0:.0f} s")
            return out
        targets = cached_refined(path, self.train_data, make)
        labelled = np.mean([np.mean(t != IGNORE) for t in targets])
        before = np.mean([np.mean(lab != IGNORE) for lab in self.train_data.labels])
        self.log(f"refined labels ({path}): {100 * labelled:.1f}% of pixels labelled "
                 f"({100 * before:.1f}% in CamVid's)")
        return targets

    def estimate_frequencies(self, sample: int = 40) -> np.ndarray:
        """Class pixel shares of the training stream in the model's classes, Parking included:
        the painted share is estimated by painting a sample of frames once."""
        n = self.info.num_classes
        labels = self.targets if self.targets is not None else self.train_data.labels
        freq = class_frequencies(labels, n)
        p = self.cfg.paint_parking
        if p > 0:
            rng = np.random.default_rng(self.cfg.seed + 7)
            idx = rng.choice(len(self.train_data), min(sample, len(self.train_data)), replace=False)
            camvid = len(CAMVID_PARKING_CLASSES)
            before = class_frequencies([self.train_data.labels[i] for i in idx], camvid)
            after = class_frequencies([paint_parking(self.train_data.images[i],
                                                     self.train_data.labels[i], rng)[1]
                                       for i in idx], camvid)
            change = p * (after - before)  # in CamVid-parking ids: into the model's classes
            if self.targets is not None:
                from .refine import primary_class

                lut, moved = primary_class(self.info.class_names), np.zeros(n)
                for camvid_id, delta in enumerate(change):
                    moved[lut[camvid_id]] += delta
                change = moved
            freq = np.clip(freq + change, 0.0, None)
            freq = freq / freq.sum()
        return freq

    # -- checkpoints
    def _save(self, path: str, epoch: int, step: int) -> None:
        tmp = path + ".tmp"
        extra = {}
        if self.ema is not None:  # "state_dict" holds the EMA (what is used); the raw weights too
            extra = {"train_state_dict": self.wrapped.model.state_dict(),
                     "ema_n_averaged": self.ema.n_averaged}
        save_checkpoint(self.eval_model(), self.info, tmp, **extra,
                        optimizer=self.optimizer.state_dict(),
                        epoch=epoch, step=step, train_seconds=self.train_seconds,
                        best_miou=self.best_miou, best_epoch=self.best_epoch,
                        history=json.dumps(self.history), config=json.dumps(self.cfg.to_dict()),
                        torch_rng=torch.get_rng_state())
        os.replace(tmp, path)  # a crash mid-write never leaves a broken checkpoint

    def _restore(self, path: str) -> Tuple[int, int]:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if self.ema is not None and "train_state_dict" in ckpt:
            self.wrapped.model.load_state_dict(ckpt["train_state_dict"])
            self.ema.module.model.load_state_dict(ckpt["state_dict"])
            self.ema.n_averaged.copy_(ckpt["ema_n_averaged"])
        else:
            self.wrapped.model.load_state_dict(ckpt["state_dict"])
            if self.ema is not None:
                self.ema.module.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.best_miou = float(ckpt["best_miou"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        self.history = json.loads(ckpt["history"])
        torch.set_rng_state(ckpt["torch_rng"])
        saved = json.loads(ckpt["config"])
        changed = {k: (saved.get(k), v) for k, v in self.cfg.to_dict().items()
                   if saved.get(k) != v
                   and k not in ("max_steps", "threads", "log_every", "val_every", "time_budget_s",
                                 "device", "workers")}
        if changed:
            self.log(f"resume: settings differ from the checkpoint's: {changed}")
        return int(ckpt["epoch"]), int(ckpt["step"])

    # -- main
    def run(self) -> Dict[str, Any]:
        c = self.cfg
        device = torch.device(c.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {c.device}: torch sees no CUDA device here")
        torch.set_num_threads(max(1, c.threads))
        torch.manual_seed(c.seed)
        self.load_data()
        criterion = self._build_model(device)
        dataset = self._train_set()
        steps_per_epoch = len(dataset) // c.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"batch size {c.batch_size} exceeds the {len(dataset)} training frames")
        self.total_steps = steps_per_epoch * c.epochs
        self.warmup_steps = int(round(c.warmup_epochs * steps_per_epoch))
        start_epoch, step = self._start()
        self.log(f"training {c.architecture} for {c.epochs} epochs x {steps_per_epoch} steps "
                 f"(batch {c.batch_size}, crop {c.crop[1]}x{c.crop[0]}, {c.optimizer} lr {c.lr}, "
                 f"paint parking p={c.paint_parking}, {torch.get_num_threads()} threads, "
                 f"{device}{f', {c.workers} data workers' if c.workers else ''})")
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        for epoch in range(start_epoch, c.epochs):
            dataset.set_epoch(epoch)
            order = np.random.default_rng([c.seed, epoch, 1]).permutation(len(dataset))
            self.wrapped.train()
            if c.freeze_bn:  # pretrained statistics: a few crops a batch cannot estimate them
                for module in self.wrapped.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
            t_epoch, losses, stop = time.perf_counter(), [], False
            for images, labels in self._batches(dataset, order[:steps_per_epoch * c.batch_size]):
                t_step = time.perf_counter()
                loss = self._step(images.to(device, non_blocking=True),
                                  labels.to(device, non_blocking=True), criterion, step, autocast)
                step += 1
                losses.append(loss)
                self.train_seconds += time.perf_counter() - t_step
                if step % c.log_every == 0:
                    self.log(f"epoch {epoch + 1}/{c.epochs} step {step} loss {loss:.4f} "
                             f"lr {self.optimizer.param_groups[0]['lr']:.2e}")
                stop = bool(c.max_steps and step >= c.max_steps) or (
                    c.time_budget_s > 0 and self.train_seconds >= c.time_budget_s)
                if stop:
                    break
            self._end_epoch(epoch, step, losses, time.perf_counter() - t_epoch,
                            last=stop or epoch + 1 == c.epochs)
            if stop:
                self.log(f"stopped after {step} steps ({self.train_seconds / 60:.1f} min of "
                         f"training; --max-steps {c.max_steps}, time budget "
                         f"{c.time_budget_s / 60:.0f} min)")
                break
        return self.finish()

    def _build_model(self, device: torch.device) -> nn.Module:
        """Model (optionally from ``init_from``), optimizer and EMA on ``device``; returns the
        class-weighted loss."""
        c = self.cfg
        self.info = model_info(c.architecture, c.input_size, c.classes)
        self.to_camvid = camvid_lut(self.info.class_names)
        self.wrapped = build_wrapped_model(self.info)
        for module in self.wrapped.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = c.bn_momentum
        weights = class_weights(self.estimate_frequencies(), c.class_weighting, c.max_class_weight)
        self.log("class weights (" + c.class_weighting + "): " +
                 ", ".join(f"{n} {w:.2f}" for n, w in zip(self.info.class_names, weights)))
        criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32,
                                                            device=device),
                                        ignore_index=IGNORE)
        if c.init_from and not (self.resume and os.path.isfile(self.last_path)):
            init = torch.load(c.init_from, map_location="cpu", weights_only=True)
            own = self.wrapped.model.state_dict()
            taken = {k: v for k, v in init["state_dict"].items() if k in own and own[k].shape == v.shape}
            self.wrapped.model.load_state_dict(taken, strict=False)
            left = sorted(set(own) - set(taken))
            self.log(f"initial weights from {c.init_from}" + (
                f" ({len(left)} tensors of another shape or absent left as initialised, e.g. "
                f"{left[:3]}: another number of classes)" if left else ""))
        self.wrapped.to(device)
        self.optimizer = make_optimizer(c.optimizer, self.wrapped.model.parameters(), c.lr,
                                        c.weight_decay)
        self.ema = None
        if c.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            # use_buffers: BatchNorm running statistics are averaged with the weights, so the
            # EMA model is consistent in eval mode without a recalibration pass.
            self.ema = AveragedModel(self.wrapped, multi_avg_fn=get_ema_multi_avg_fn(c.ema),
                                     use_buffers=True)
        return criterion

    def _train_set(self) -> SegmentationTrainSet:
        c = self.cfg
        dataset = SegmentationTrainSet(
            self.train_data, train_transforms(tuple(c.crop), c.input_size[0], tuple(c.scale),
                                              c.color_jitter),
            c.paint_parking, c.seed, paint_markings_p=c.paint_markings, kerb_p=c.kerb_parking,
            car_p=c.parked_cars, photometric_strength=c.photometric, aspect=tuple(c.aspect),
            targets=self.targets, primary=self._primary())
        if c.parked_cars > 0:
            self.log(f"parked cars: {len(dataset.cars)} car cutouts from the training frames")
        return dataset

    def _primary(self) -> Optional[np.ndarray]:
        from .refine import primary_class

        return primary_class(self.info.class_names) if self.targets is not None else None

    def _start(self) -> Tuple[int, int]:
        """(first epoch, step): from ``last.pt`` when resuming, else from the beginning."""
        self.best_miou, self.best_epoch, self.history = -1.0, -1, []
        self.train_seconds = 0.0
        self.step_losses: List[float] = []  # this process's steps only (not checkpointed)
        if self.resume and os.path.isfile(self.last_path):
            start_epoch, step = self._restore(self.last_path)
            self.log(f"resumed from {self.last_path}: epoch {start_epoch}, step {step}, "
                     f"best val mIoU {100 * max(self.best_miou, 0):.1f}")
            return start_epoch, step
        if self.resume:
            self.log(f"resume: no checkpoint at {self.last_path}, starting fresh")
        return 0, 0

    def _step(self, images: torch.Tensor, labels: torch.Tensor, criterion: nn.Module, step: int,
              autocast: torch.autocast) -> float:
        """One optimisation step at the scheduled learning rate; returns its loss."""
        c = self.cfg
        progress = self.progress(step, self.total_steps, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * lr_factor(step, self.total_steps, self.warmup_steps, progress)
        with autocast:
            logits = self.wrapped.logits(images)
        loss = criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.wrapped)
        value = loss.item()
        self.step_losses.append(value)
        return value

    def _end_epoch(self, epoch: int, step: int, losses: List[float], seconds: float,
                   last: bool) -> None:
        """Validate when due (keeping ``best.pt``), record the epoch, save ``last.pt``."""
        c = self.cfg
        entry: Dict[str, Any] = {"epoch": epoch + 1, "mean_loss": sum(losses) / max(1, len(losses)),
                                 "seconds": round(seconds, 1)}
        line = (f"epoch {epoch + 1}/{c.epochs} done: mean loss {entry['mean_loss']:.4f} "
                f"({seconds:.0f} s, {len(losses) * c.batch_size / seconds:.1f} img/s)")
        best = False
        if self.val_data is not None and ((epoch + 1) % c.val_every == 0 or last):
            summary = evaluate_predictions(torch_predictor(self.eval_model(), self.to_camvid), self.val_data)
            entry["val"] = {k: summary[k] for k in ("miou", "road_iou", "pedestrian_iou")}
            line += f"; val {format_summary(summary)}"
            best = summary["miou"] > self.best_miou
            if best:
                self.best_miou, self.best_epoch = summary["miou"], epoch + 1
                line += " (best)"
        self.history.append(entry)
        if best:
            self._save(self.best_path, epoch + 1, step)
        self._save(self.last_path, epoch + 1, step)
        self.log(line)

    def _batches(self, dataset, order: np.ndarray):
        """The epoch's batches in ``order``: made here, or by ``workers`` processes ahead."""
        c = self.cfg
        if c.workers <= 0:
            for b in range(len(order) // c.batch_size):
                yield _collate([dataset[int(i)] for i in order[b * c.batch_size:(b + 1) * c.batch_size]])
            return
        from torch.utils.data import DataLoader

        yield from DataLoader(dataset, batch_size=c.batch_size, sampler=[int(i) for i in order],
                              num_workers=c.workers, collate_fn=_collate, pin_memory=True,
                              drop_last=True, worker_init_fn=_seed_worker)

    def eval_model(self) -> ClassMapModel:
        """The weights that are validated, kept and exported: the EMA when it is on."""
        return self.ema.module if self.ema is not None else self.wrapped

    def progress(self, step: int, total_steps: int, warmup_steps: int) -> float:
        by_steps = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if self.cfg.time_budget_s <= 0:
            return by_steps
        return max(by_steps, self.train_seconds / self.cfg.time_budget_s)

    def finish(self) -> Dict[str, Any]:
        """Load the best checkpoint (the last one when there is no validation set)."""
        path = self.best_path if os.path.isfile(self.best_path) else self.last_path
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self.wrapped.model.load_state_dict(ckpt["state_dict"])
        self.wrapped.eval()
        result = {"checkpoint": path, "epoch": int(ckpt["epoch"]), "steps": int(ckpt["step"]),
                  "train_minutes": round(float(ckpt.get("train_seconds", 0.0)) / 60, 1),
                  "best_val_miou": self.best_miou if self.best_miou >= 0 else None,
                  "history": self.history, "step_losses": self.step_losses}
        self.log(f"using {path} (epoch {result['epoch']})")
        return result

    def evaluate_test(self) -> Optional[Dict[str, Any]]:
        c = self.cfg
        if not c.test_split or not has_split(c.data_root, c.layout, c.test_split):
            return None
        data = load_split(c.data_root, c.layout, c.test_split, tuple(c.input_size), c.limit)
        summary = evaluate_predictions(torch_predictor(self.wrapped, self.to_camvid), data)
        self.log(f"test ({c.test_split}, {len(data)} frames): {format_summary(summary)}; per class: "
                 + ", ".join(f"{k} {100 * v:.1f}" for k, v in summary["per_class_iou"].items()
                             if v is not None))
        return summary

    def export(self, onnx_path: str, result: Dict[str, Any],
               test: Optional[Dict[str, Any]] = None) -> Tuple[str, str]:
        """Write ``onnx_path`` and a weights-only checkpoint beside it (same name, .pt), both
        carrying the metadata with the recipe and the measured numbers."""
        c = self.cfg
        measured: Dict[str, Any] = {}
        if result.get("best_val_miou") is not None:
            measured["val_miou"] = round(result["best_val_miou"], 4)
        if test is not None:
            measured[f"{c.test_split}_miou"] = round(test["miou"], 4)
            measured[f"{c.test_split}_road_iou"] = round(test["road_iou"], 4)
            measured[f"{c.test_split}_pedestrian_iou"] = round(test["pedestrian_iou"], 4)
            measured[f"{c.test_split}_frames"] = test["frames"]
            measured["note"] = "11 CamVid classes, Parking counted as Road"
        recipe = {k: v for k, v in c.to_dict().items()
                  if k not in ("data_root", "run_dir", "max_steps", "log_every", "limit")}
        info = self.info.with_source(
            dataset=f"{c.layout}: {os.path.basename(os.path.normpath(c.data_root))} "
                    f"({'+'.join(c.train_splits)}), parking bays painted"
                    + (f", labels refined by {os.path.basename(c.teacher)}" if self.targets is not None else "")
                    + (", parked cars pasted" if c.parked_cars > 0 else "")
                    + (", road-marking negatives" if c.paint_markings > 0 else ""),
            recipe=recipe, epochs=result["epoch"], steps=result["steps"],
            train_minutes=result["train_minutes"],
            date=datetime.date.today().isoformat(), measured=measured,
            weights=(f"fine-tuned from {os.path.basename(c.init_from)}" if c.init_from
                     else "trained from scratch"))
        export_onnx(self.wrapped, info, onnx_path)
        pt_path = os.path.splitext(onnx_path)[0] + ".pt"
        save_checkpoint(self.wrapped, info, pt_path)
        self.log(f"exported {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB) and {pt_path} "
                 f"({os.path.getsize(pt_path) / 1e6:.1f} MB)")
        return onnx_path, pt_path
