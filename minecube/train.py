"""Training: AdamW, cross-entropy (+ Dice), early stopping on validation mIoU.

:func:`fit` returns the model with its :class:`~minecube.models.ModelCard` filled in (bands,
normalisation, class schema, sites, settings, metrics); :func:`minecube.models.save` writes it as
safetensors + JSON.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from minecube.classes import IGNORE_INDEX
from minecube.errors import MinecubeError
from minecube.evaluate import _summary, confusion_matrix
from minecube.models import Segmenter, card_for

if TYPE_CHECKING:
    import torch

    from minecube.chips import ChipDataset

__all__ = ["LOSSES", "NonFiniteError", "fit", "pick_device"]

Loss = Literal["ce", "ce+dice"]
LOSSES: tuple[str, ...] = ("ce", "ce+dice")
"""``"ce"``: cross-entropy; ``"ce+dice"``: cross-entropy plus multiclass Dice loss."""


class NonFiniteError(MinecubeError, FloatingPointError):
    """Training diverged: the loss (or a weight) is NaN or infinite."""


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to torch."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _class_weights(data: ChipDataset, option, classes: int) -> np.ndarray | None:
    if option is None:
        return None
    if option == "balanced":
        counts = np.zeros(classes)
        for i in range(len(data)):
            mask = data[i]["mask"].numpy()
            counts += np.bincount(mask[mask != IGNORE_INDEX], minlength=classes)[:classes]
        present = counts > 0
        weights = np.ones(classes)
        weights[present] = counts[present].sum() / (present.sum() * counts[present])
        return np.clip(weights, 0.1, 10.0)
    weights = np.asarray(option, dtype=float)
    if weights.shape != (classes,):
        raise ValueError(f"class_weights has {weights.size} values for {classes} classes")
    return weights


def _loader(data, batch_size: int, shuffle: bool, seed: int, num_workers: int, sampler=None):
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=shuffle and len(data) > batch_size,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        # fork after dask's threads can hang (field notes); forkserver is safe
        multiprocessing_context="forkserver" if num_workers else None,
    )


def _validate(model, loader, device, classes: int) -> dict[str, float]:
    import torch

    cm = np.zeros((classes, classes), dtype=np.int64)
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            pred = model(batch["image"].to(device)).argmax(1).cpu().numpy()
            cm += confusion_matrix(pred, batch["mask"].numpy(), classes)
    return _summary(cm)


def fit(
    model: Segmenter,
    train: ChipDataset,
    val: ChipDataset | None = None,
    *,
    epochs: int = 20,
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    loss: Loss = "ce",
    class_weights: Literal["balanced"] | Sequence[float] | None = None,
    patience: int = 5,
    device: str = "auto",
    amp: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
    sampler: Literal["balanced"] | None = None,
    min_share: float = 0.01,
) -> Segmenter:
    """Train ``model`` on chips, keeping the weights of the best validation epoch.

    Parameters
    ----------
    model
        From :func:`minecube.models.create`, with ``in_channels`` = the chips' bands and
        ``classes`` = the schema's classes.
    train, val
        :class:`~minecube.chips.ChipDataset` of the training and validation sites; ``val`` uses
        ``train.norm``. Without ``val`` the last epoch is kept.
    epochs, batch_size, lr, weight_decay
        AdamW settings; the learning rate follows a one-cycle schedule (warm-up over the
        first 10 % of steps to ``lr``, then cosine decay towards zero).
    loss
        One of :data:`LOSSES`. Unlabelled pixels (IGNORE_INDEX) never count.
    class_weights
        ``None``, ``"balanced"`` (inverse class frequency on the training chips, clipped to
        0.1–10) or one weight per class.
    patience
        Stop after this many epochs without a better validation mIoU.
    device
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:0"``…
    amp
        Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling).
    seed
        Seeds initial shuffling, augmentation and torch; the same seed on CPU gives the same
        weights.
    num_workers
        DataLoader worker processes (chips are in memory; 0 is usually fastest).
    sampler, min_share
        ``None`` (every chip once per epoch, shuffled) or ``"balanced"``: chips holding rare
        classes (each counted where it covers ``min_share`` of a chip) drawn more often
        (:meth:`minecube.chips.ChipDataset.sampler`), seeded by ``seed``.

    Returns
    -------
    Segmenter
        The trained model with ``model.card`` set; ``card.metrics`` holds ``val_miou``,
        ``best_epoch`` and the per-epoch ``history``.

    Examples
    --------
    See ``notebooks/`` and :func:`minecube.experiment.run` for complete runs; in short::

        train_chips = ChipDataset(cubes_train, labels_train, bands="rgbn", augment=True)
        val_chips = ChipDataset(cubes_val, labels_val, bands="rgbn", norm=train_chips.norm)
        model = fit(create("fpn", in_channels=4, classes=10), train_chips, val_chips)
        save(model, "models/fpn-rgbn")
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not one of {list(LOSSES)}")
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: train at least one epoch (a model of 0 is random)")
    classes = len(train.schema)
    spec = model.spec
    if spec.in_channels != len(train.bands) or spec.classes != classes:
        raise ValueError(
            f"the model takes {spec.in_channels} channels and predicts {spec.classes} classes, "
            f"but the chips have {len(train.bands)} bands {list(train.bands)} and "
            f"{classes} classes; create(..., in_channels={len(train.bands)}, classes={classes})"
        )
    if spec.frames != train.frames:
        raise ValueError(f"the model takes frames={spec.frames}, the chips have {train.frames}")
    if val is not None and (val.norm != train.norm or val.bands != train.bands):
        raise ValueError("val must use the training chips' bands and norm (norm=train.norm)")
    torch.manual_seed(seed)
    dev = pick_device(device)
    model = model.to(dev)
    weights = _class_weights(train, class_weights, classes)
    weight_t = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=dev)
    dice = None
    if loss == "ce+dice":
        from segmentation_models_pytorch.losses import DiceLoss

        dice = DiceLoss("multiclass", ignore_index=IGNORE_INDEX)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    draw = None if sampler is None else train.sampler(sampler, min_share=min_share, seed=seed)
    train_loader = _loader(train, batch_size, True, seed, num_workers, draw)
    val_loader = None if val is None else _loader(val, batch_size, False, seed, num_workers)
    total = epochs * len(train_loader)
    schedule = _schedule(torch, optimiser, lr, total)
    use_amp = amp and dev.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and dtype == torch.float16)
    history, best, best_state, best_epoch, stale = [], -1.0, None, 0, 0
    started = time.perf_counter()
    bar = tqdm(total=total, desc="training", unit="step", disable=not progress)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        model.train()
        running, steps, t0 = 0.0, 0, time.perf_counter()
        for batch in train_loader:
            image, mask = batch["image"].to(dev), batch["mask"].to(dev)
            with torch.autocast(dev.type, dtype=dtype, enabled=use_amp):
                logits = model(image)
                value = F.cross_entropy(logits, mask, weight=weight_t, ignore_index=IGNORE_INDEX)
                if dice is not None:
                    value = value + dice(logits, mask)
            loss_value = float(value.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteError(
                    f"the training loss became {loss_value} at epoch {epoch + 1}, step "
                    f"{steps + 1}: nothing is saved. Lower lr= (now {lr}), check the chips for "
                    "non-finite values, or the encoder weights (a file of NaN weights trains to "
                    "NaN)"
                )
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            running += loss_value
            steps += 1
            bar.update()
        record = {
            "epoch": epoch + 1,
            "train_loss": running / max(steps, 1),
            "seconds": time.perf_counter() - t0,
        }
        if val_loader is not None:
            record.update(
                {f"val_{k}": v for k, v in _validate(model, val_loader, dev, classes).items()}
            )
        history.append(record)
        bar.set_postfix(
            epoch=epoch + 1, loss=f"{record['train_loss']:.3f}",
            val_miou=f"{record.get('val_miou', float('nan')):.3f}",
        )  # fmt: skip
        score = record.get("val_miou", epoch)
        if score > best:
            best, best_epoch, stale = score, epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if val_loader is not None and stale >= patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.card = card_for(
        model,
        bands=train.bands,
        normalisation=train.norm,
        schema=train.schema,
        training={
            "sites": list(train.sites),
            "sensors": list(getattr(train, "sensors", ())),
            "val_sites": [] if val is None else list(val.sites),
            "chips": len(train),
            "input_dims": train.input_dims,
            "input_overlap": train.input_overlap,
            "epochs_run": len(history),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "loss": loss,
            "class_weights": None if weights is None else weights.round(4).tolist(),
            "augment": train.augment,
            "sampler": sampler,
            "labelled_fraction": round(float(getattr(train, "labelled_fraction", 1.0)), 4),
            "labels": _labels_note(getattr(train, "labelled_fraction", 1.0)),
            "seed": seed,
            "device": str(dev),
            "amp": use_amp,
            "seconds": round(time.perf_counter() - started, 1),
        },
        metrics={
            "val_miou": None if val is None else best,
            "best_epoch": best_epoch,
            "history": history,
        },
    )
    return model.eval()


def _labels_note(fraction: float) -> str:
    """What the card says of the labels: complete, or partial and how partial."""
    if fraction >= 0.999:
        return "complete: every observed pixel of the training sites is labelled"
    return (
        f"partial: {fraction:.1%} of the observed pixels of the training sites are labelled; "
        "only those count in the loss and the scores"
    )


def _schedule(torch, optimiser, lr: float, total: int):
    """One-cycle learning rate over ``total`` steps (10 % warm-up, at least one step each way);
    a constant rate below 4 steps, where one cycle has no room."""
    if total < 4:
        return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)
    # OneCycleLR divides by pct_start × total − 1, zero at exactly 10 steps with 10 %
    pct = min(0.5, max(0.1, 2.0 / total))
    return torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=lr, total_steps=total, pct_start=pct, anneal_strategy="cos"
    )
