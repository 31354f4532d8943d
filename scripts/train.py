#!/usr/bin/env python3
"""Train a small (32x32) SA model on CIFAR-10 (image folders), seeded and resumable.

Writes into --run-dir: train.log, last.pth (resume state), best.pth (official SA-Net training format:
epoch, arch, state_dict, best_acc, optimizer) and, with --export-to, a slim checkpoint + model card for packaging.

Example (background, with a log):
  nohup python scripts/train.py --model sa_resnet_cifar --time-budget-min 90 --run-dir runs/resnet \
      --export-to sa_deploy/weights > runs/resnet.out 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sa_deploy.data.resolve import default_data_dir
from sa_deploy.data.sources import ImageSource
from sa_deploy.models import create_model
from sa_deploy.util.hashing import file_sha256


def log(run_dir: Path, msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(run_dir / "train.log", "a") as f:
        f.write(line + "\n")


def load_split(root: Path, cfg, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded uint8 images (N,3,H,W) and labels, cached as .npz in the run dir (decoding 50k JPEGs is slow)."""
    if cache.is_file():
        with np.load(cache) as d:
            return torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    src = ImageSource(root, cfg)
    images, labels = src.load(progress=False)
    np.savez(cache, x=images.transpose(0, 3, 1, 2).copy(), y=labels)
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding + horizontal flip, on a uint8 batch (N,3,H,W)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (n,h)
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (n,w)
    idx_n = torch.arange(n)[:, None, None, None]
    idx_c = torch.arange(3)[None, :, None, None]
    out = padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean) / std


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, mean, std, bs: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += (model(to_input(x[i:i + bs], mean, std)).argmax(1) == y[i:i + bs]).sum().item()
    return 100.0 * correct / len(x)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sa_resnet_cifar")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="folder with train/ and val/ (default: $SA_DEPLOY_DATA)")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--epochs", type=float, default=30.0)
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="size the schedule (epochs) to fit this many minutes, from the measured step time")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--limit-train", type=int, default=None, help="use only N training images (quick tests)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile: the same fp32 math in fused kernels, ~1.5x faster steps on CPU "
                        "(after a 1-2 min compile); the card records from which step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--reschedule", action="store_true",
                   help="with --resume: re-size the remaining schedule to --epochs (e.g. to finish sooner)")
    p.add_argument("--export-to", type=Path, default=None, help="write <model>.pth + <model>.card.json here")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from these weights (e.g. the embedded sa_deploy/weights/<model>.pth) with a fresh "
                        "optimizer and schedule; ignored when --resume finds last.pth")
    args = p.parse_args(argv)
    if args.data is None:
        p.error("CIFAR-10 image folders not found: pass --data DIR (with train/ and val/) or set SA_DEPLOY_DATA")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    resuming = args.resume and (args.run_dir / "last.pth").is_file()
    model = create_model(args.model, checkpoint=args.init_from if args.init_from and not resuming else None)
    cfg = model.preprocess
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    t0 = time.time()
    xtr, ytr = load_split(args.data / "train", cfg, args.run_dir / "train_u8.npz")
    xva, yva = load_split(args.data / "val", cfg, args.run_dir / "val_u8.npz")
    if args.limit_train:
        keep = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(args.seed))[:args.limit_train]
        xtr, ytr = xtr[keep], ytr[keep]
    log(args.run_dir, f"data: {len(xtr)} train / {len(xva)} val images in {time.time() - t0:.0f}s")

    decay = [p_ for n, p_ in model.named_parameters() if p_.ndim > 1 and ".sa." not in n]
    no_decay = [p_ for n, p_ in model.named_parameters() if p_.ndim <= 1 or ".sa." in n]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(xtr) // args.batch_size
    state = {"step": 0, "epoch": 0, "best_acc": 0.0, "total_steps": None, "curve": [], "train_seconds": 0.0}
    last = args.run_dir / "last.pth"
    if args.resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        state.update(json.loads(ck["state_json"]))
        if args.reschedule:
            state["total_steps"] = max(state["step"], int(args.epochs * steps_per_epoch))
            state.setdefault("rescheduled", []).append({"at_step": state["step"],
                                                        "total_steps": state["total_steps"]})
        log(args.run_dir, f"resumed at step {state['step']} (epoch {state['epoch']})")
    if args.init_from and not resuming:  # a later stage: its card says where it started from, and what that took
        prev_card = args.init_from.with_suffix(".card.json")
        prev = json.loads(prev_card.read_text()) if prev_card.is_file() else {}
        state["init_from"] = {"weights": str(args.init_from), "sha256": file_sha256(args.init_from),
                              **{k: prev[k] for k in ("val_top1", "commands", "curve") if k in prev},
                              "epochs": prev.get("total_epochs", prev.get("epochs", 0)),
                              "train_minutes": prev.get("total_train_minutes", prev.get("train_minutes", 0))}
    state.setdefault("commands", []).append(
        "python scripts/train.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    gen = torch.Generator().manual_seed(args.seed + state["epoch"])
    forward = model
    if args.compile:
        forward = torch.compile(model)  # training steps only: evaluation and saving use the module itself
        state.setdefault("compiled_from_step", state["step"])

    def save(path: Path, official: bool) -> None:
        tmp = path.with_suffix(".tmp")
        payload = {"epoch": state["epoch"], "arch": args.model, "state_dict": model.state_dict(),
                   "best_acc": state["best_acc"], "optimizer": opt.state_dict()}
        if not official:
            payload["state_json"] = json.dumps(state)
        torch.save(payload, tmp)
        os.replace(tmp, path)

    step_time = None
    while True:
        if state["total_steps"] is not None and state["step"] >= state["total_steps"]:
            break
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        t_epoch, loss_sum, seen = time.time(), 0.0, 0
        for b in range(steps_per_epoch):
            if state["total_steps"] is not None and state["step"] >= state["total_steps"]:
                break
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            xb = to_input(augment(xtr[idx], gen), mean, std)
            total = state["total_steps"] or int(args.epochs * steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"], total, args.lr, warmup=steps_per_epoch // 2)
            loss = F.cross_entropy(forward(xb), ytr[idx], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            probe = min(30, steps_per_epoch)  # steps timed before the schedule is sized (fewer on tiny data)
            if state["total_steps"] is None and state["step"] == probe:
                step_time = (time.time() - t_epoch) / probe
                if args.time_budget_min:
                    # leave ~8% for evaluation/checkpoints
                    budget_steps = int(0.92 * args.time_budget_min * 60 / step_time)
                    state["total_steps"] = max(steps_per_epoch, budget_steps)
                else:
                    state["total_steps"] = int(args.epochs * steps_per_epoch)
                log(args.run_dir, f"{step_time:.2f}s/step -> schedule {state['total_steps']} steps "
                                  f"({state['total_steps'] / steps_per_epoch:.1f} epochs)")
        state["epoch"] += 1
        state["train_seconds"] += time.time() - t_epoch
        acc = evaluate(model, xva, yva, mean, std)
        state["curve"].append({"epoch": state["epoch"], "step": state["step"], "val_top1": round(acc, 2),
                               "train_loss": round(loss_sum / max(seen, 1), 4)})
        log(args.run_dir, f"epoch {state['epoch']} step {state['step']}/{state['total_steps']} "
                          f"loss {loss_sum / max(seen, 1):.3f} val top-1 {acc:.2f}% ({time.time() - t_epoch:.0f}s)")
        if acc > state["best_acc"]:
            state["best_acc"] = acc
        save(last, official=False)
    # the final (fully annealed) weights are the ones shipped; best_acc records the best epoch seen
    final_acc = state["curve"][-1]["val_top1"]
    save(args.run_dir / "final.pth", official=True)
    card = {
        "model": args.model, "val_top1": final_acc, "best_val_top1_during_training": state["best_acc"],
        "data": {"train": str(args.data / "train"), "val": str(args.data / "val"), "train_images": len(xtr),
                 "val_images": len(xva)},
        "epochs": round(state["step"] / steps_per_epoch, 2), "steps": state["step"], "batch_size": args.batch_size,
        "seed": args.seed, "lr": args.lr, "weight_decay": args.wd, "label_smoothing": args.label_smoothing,
        "augmentation": "random crop 32 with 4px zero padding, horizontal flip",
        "commands": state["commands"],
        "train_minutes": round(state["train_seconds"] / 60, 1), "threads": args.threads,
        "compiled_from_step": state.get("compiled_from_step"),
        "torch": torch.__version__, "curve": state["curve"], "rescheduled": state.get("rescheduled", []),
        "preprocess": cfg.to_dict(),
    }
    if state.get("init_from"):
        card["init_from"] = state["init_from"]
        card["total_epochs"] = round(card["epochs"] + state["init_from"].get("epochs", 0), 2)
        card["total_train_minutes"] = round(card["train_minutes"] + state["init_from"].get("train_minutes", 0), 1)
    (args.run_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    if args.export_to:
        args.export_to.mkdir(parents=True, exist_ok=True)
        out = args.export_to / f"{args.model}.pth"
        slim = {"epoch": state["epoch"], "arch": args.model, "state_dict": model.state_dict(),
                "best_acc": final_acc, "class_names": ",".join(cfg.class_names)}
        torch.save(slim, out.with_suffix(".tmp"))
        os.replace(out.with_suffix(".tmp"), out)
        (args.export_to / f"{args.model}.card.json").write_text(json.dumps(card, indent=2))
    log(args.run_dir, f"done: val top-1 {final_acc:.2f}% after {card['epochs']} epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
