"""Step 9: training SE-ResNet-20 on CIFAR-10, with the training loop written out.
==============================================================================

The lesson
----------
SE-ResNet-20 is He et al.'s 20-layer CIFAR ResNet (three stages of three basic blocks, 16/32/64
channels, 0.27 M parameters) with an SE block (r = 16) on the residual branch of each of its 9
blocks (step 8). Training is the same few lines every deep-learning library runs::

    for each batch (x, y):                  random 32×32 crop of the 4-pixel zero-padded image,
                                            random left-right flip, per-channel normalisation
        logits = model(x)                   forward
        L = cross_entropy(logits, y)        mean of −log softmax(logits)_y over the batch
        L.backward()                        every parameter's ∂L/∂θ (steps 1–7)
        SGD step:  b ← μ b + (∂L/∂θ + λ θ);  θ ← θ − η b     (momentum μ = 0.9, weight decay λ = 1e-4)
        learning-rate schedule: η = 0.1, ÷10 at 50% and 75% of the run

The paper's CIFAR recipe (He et al. 2016; PAPER.md) is batch 128 for 64k iterations, ÷10 at 32k
and 48k: about 180 epochs, days on a CPU. By default this step runs the same loop on a small
slice (1024 images, 2 epochs, well under a minute) just to watch the loss fall; ``--full`` runs
the paper's schedule through ``minise.train.train`` (the loop below plus checkpoints, resuming
and metrics; equivalently ``minise train --preset he2016 --model se_resnet20``), best on a GPU
(``--device cuda``). ``--compare`` trains plain ResNet-20 on the same batches too. At depth 20
the SE gain is small (about 0.4 points) and within seed-to-seed noise: compare over several seeds.

The trained weights are saved to ``OUT/se_resnet20.npz``; step 10 reads them with --checkpoint.

Run::

    python tutorials/09_train_se_resnet20.py [--data-dir DIR] [--out DIR] [--quick | --full] [--compare]
"""

from __future__ import annotations

import time

import _common as C
import numpy as np

import minise.functional as F
from minise import Tensor, models
from minise.backend import to_numpy
from minise.checkpoint import save_checkpoint
from minise.data import BatchLoader, channel_stats
from minise.nn import SqueezeExcitation, init
from minise.optim import SGD, MultiStepLR
from minise.train import evaluate


def extra(parser) -> None:
    C.add_data_args(parser)
    parser.add_argument("--full", action="store_true",
                        help="the paper's schedule: 64k iterations of batch 128 on all of CIFAR-10 (days on a CPU)")
    parser.add_argument("--compare", action="store_true", help="also train plain ResNet-20 on the same batches")
    parser.add_argument("--train-images", type=int, default=None,
                        help="training images in the short run (default 1024)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs in the short run (default 2)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu (NumPy) or cuda (CuPy)")
    parser.add_argument("--seed", type=int, default=0)


args = C.setup(__doc__, extra=extra)
names = ["se_resnet20", "resnet20"] if args.compare else ["se_resnet20"]

# %%
if args.full:
    from minise.config import DEFAULTS, PRESETS
    from minise.train import train

    C.section("The paper's schedule (He et al. 2016), through minise.train.train")
    histories = {}
    for name in names:
        cfg = {**DEFAULTS, **PRESETS["he2016"], "model": name, "seed": args.seed}
        result = train(cfg, out=args.out / f"run_{name}", data_dir=args.data_dir, device=args.device)
        histories[name] = result["history"]
        if name == "se_resnet20":
            import shutil

            shutil.copyfile(args.out / f"run_{name}" / "best.npz", args.out / "se_resnet20.npz")
    fig, axes = C.plt.subplots(1, 2, figsize=(12, 4.4))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], label=f"{name} train")
        axes[0].plot(ep, [h["test_loss"] for h in hist], "--", label=f"{name} test")
        axes[1].plot(ep, [100 * (1 - h["test_acc"]) for h in hist], label=f"{name} test error")
    axes[0].set(xlabel="epoch", ylabel="cross-entropy loss (nats)", title="loss")
    axes[1].set(xlabel="epoch", ylabel="test error (%)", title="test error (paper: ResNet-20 8.75%)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("Step 9: CIFAR-10, the paper's schedule (64k iterations, batch 128)")
    C.save(fig, args.out, "training_curves.png")
    raise SystemExit(0)

# %%
C.section("1. Data")
data, data_label = C.get_cifar(args.data_dir, args.download)
n_train = args.train_images or (128 if args.quick else 1024)
n_test = 100 if args.quick else 500
epochs = args.epochs or 2
batch = 32 if args.quick else 64
data = data.subset(n_train, n_test)
mean, std = channel_stats(data.train_images)
print(f"{data_label}: {len(data.train_labels)} training / {len(data.test_labels)} test images; "
      f"channel means {np.round(mean, 3)}, std {np.round(std, 3)} (0..1 scale)")

# %%
runs = {}
for name in names:
    per_epoch = -(-len(data.train_labels) // batch)  # ceil
    C.section(f"2. Train {name}: {epochs} epochs of {per_epoch} iterations, batch {batch}")
    init.manual_seed(args.seed)  # the same initial weights for a given seed
    model = models.create(name).to(args.device)
    se_blocks = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    print(f"{name}: {model.num_parameters():,} parameters, {len(se_blocks)} SE blocks, device {args.device}")
    if name == "se_resnet20":
        C.claim(len(se_blocks) == 9, "SE-ResNet-20 has 9 SE blocks (3 stages × 3 blocks)")
        C.claim(model.num_parameters() == 272_095, "SE-ResNet-20 has 272,095 parameters (ResNet-20: 269,722)")
    rng = np.random.default_rng([args.seed, 1])  # the same batches and augmentations for every model
    loader = BatchLoader(data.train_images, data.train_labels, batch, mean=mean, std=std, shuffle=True,
                         augment=True, rng=rng, device=args.device)
    total = epochs * len(loader)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    schedule = MultiStepLR(optimizer, milestones=[total // 2, (3 * total) // 4], gamma=0.1)
    log = {"loss": [], "acc": [], "lr": [], "test_acc": [], "test_loss": [], "epoch_end": []}
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            logits = model(Tensor(x))  # forward
            loss = F.cross_entropy(logits, Tensor(y))
            optimizer.zero_grad()
            loss.backward()  # backward
            log["lr"].append(schedule.lr)
            optimizer.step()  # θ ← θ − η b
            schedule.step()
            log["loss"].append(loss.item())
            log["acc"].append(float((logits.data.argmax(axis=1) == y).mean()))
        result = evaluate(model, data.test_images, data.test_labels, mean, std, data.num_classes,
                          batch_size=100, device=args.device)
        log["test_acc"].append(result["accuracy"])
        log["test_loss"].append(result["loss"])
        log["epoch_end"].append(len(log["loss"]))
        n = len(loader)
        print(f"epoch {epoch + 1}/{epochs}: train loss {np.mean(log['loss'][-n:]):.3f}, "
              f"train acc {100 * np.mean(log['acc'][-n:]):.1f}%, test loss {result['loss']:.3f}, "
              f"test acc {100 * result['accuracy']:.1f}%   ({time.perf_counter() - t0:.1f} s so far)")
    log["seconds"] = time.perf_counter() - t0
    runs[name] = (model, log)
    losses = np.array(log["loss"])
    k = max(3, len(losses) // 5)
    print(f"mean loss of the first {k} iterations {losses[:k].mean():.3f}, of the last {k}: {losses[-k:].mean():.3f} "
          f"(ln 10 = {np.log(10):.3f} is a uniform guess)")
    C.claim(np.isfinite(losses).all(), "the loss stayed finite")
    C.claim(losses[-k:].mean() < losses[:k].mean(), "the training loss went down")

# %%
C.section("3. Save the weights for step 10")
model, log = runs["se_resnet20"]
ckpt = save_checkpoint(
    args.out / "se_resnet20.npz",
    {f"model/{k}": to_numpy(v) for k, v in model.state_dict().items()},
    {"kind": "tutorial", "model": "se_resnet20", "config": {"model": "se_resnet20", "reduction": 16},
     "num_classes": data.num_classes, "classes": data.classes, "mean": mean.tolist(), "std": std.tolist(),
     "synthetic": bool(data.synthetic), "iterations": len(log["loss"]), "test_acc": log["test_acc"][-1]},
)
print(f"checkpoint: {ckpt}  (python tutorials/10_role_of_excitation.py --checkpoint {ckpt})")

# %%
fig, axes = C.plt.subplots(1, 3, figsize=(16, 4.4))
for name, (_, lg) in runs.items():
    it = np.arange(1, len(lg["loss"]) + 1)
    w = max(1, len(it) // 10)
    smooth = np.convolve(lg["loss"], np.ones(w) / w, mode="valid")
    line, = axes[0].plot(it, lg["loss"], alpha=0.3)
    axes[0].plot(it[w - 1:], smooth, color=line.get_color(), label=f"{name} (moving mean of {w})")
    axes[1].plot(lg["epoch_end"], [100 * a for a in lg["test_acc"]], "o-", color=line.get_color(),
                 label=f"{name}, {len(data.test_labels)} test images")
    axes[2].plot(it, lg["lr"], color=line.get_color(), label=name)
axes[0].axhline(np.log(data.num_classes), color="gray", ls=":", label="ln 10 (uniform guess)")
axes[0].set(xlabel="iteration", ylabel="training cross-entropy (nats)", title="training loss, per batch")
axes[1].axhline(100 / data.num_classes, color="gray", ls=":", label="chance")
axes[1].set(xlabel="iteration", ylabel="test accuracy (%)", title="test accuracy, after each epoch")
axes[2].set(xlabel="iteration", ylabel="learning rate η", title="schedule: η = 0.1, ÷10 at 50% and 75%")
for ax in axes:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
fig.suptitle(f"Step 9: short training on {data_label} ({len(data.train_labels)} images, {epochs} epochs, "
             f"{log['seconds']:.0f} s on {args.device}) — a demonstration, not the paper's schedule (--full)")
C.save(fig, args.out, "training_curves.png")

print("\nStep 9 done: the loop is forward, loss, backward, SGD step; the paper's run is the same loop, longer.")
