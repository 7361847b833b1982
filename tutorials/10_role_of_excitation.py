"""Step 10: what the excitations learn. Per-class distributions of s at several depths.
====================================================================================

The lesson
----------
Section 7.2 of the paper ("role of excitation") feeds images of a few classes through a trained
SE-ResNet-50 and plots, for several SE blocks, the average excitation s_c of each channel per
class. What it found on ImageNet:

- early blocks: nearly the same s for every class: the features there are shared, class-agnostic;
- deeper blocks: s depends on the class: the recalibration becomes class-specific;
- the very last blocks saturate (s ≈ 1, close to the identity) or look alike across classes, so
  removing them costs little accuracy (step 8: and saves most of SE's parameters).

Here we do the same for SE-ResNet-20 on CIFAR-10: its 9 SE blocks are named SE_stage_block
(SE_1_1 … SE_3_3; 16, 32 and 64 channels). Every ``nn.SqueezeExcitation`` can keep its latest s
(``keep_excitation = True``), so one forward pass in evaluation mode collects them all.

Two numbers put "class-specific" into figures, per block, averaged over its channels c::

    spread = std over classes k of mean_k(s_c)     how far apart the class curves lie (units of s,
                                                   what the paper's figure shows by eye)
    η²     = Σ_k n_k (mean_k s_c − mean s_c)² / Σ_n (s_c,n − mean s_c)²
                                                   the fraction of s_c's variance over images that
                                                   the class explains (0: none, 1: all)

Both are compared with their value for shuffled labels (what a class-blind s would show by
chance with this many images). A block can have a large η² with a tiny spread: its s barely
varies, but what variation there is follows the class (early blocks see colour, and colour
already tells classes apart a little: step 5).

With ``--checkpoint`` (from step 9, or from ``minise train``) the pictures show a trained
network. Without one this step trains briefly (well under a minute), which is enough to see the
machinery but NOT the paper's pattern: that needs a network trained to convergence
(``python tutorials/09_train_se_resnet20.py --full``, then ``--checkpoint OUT/se_resnet20.npz``).

Run::

    python tutorials/10_role_of_excitation.py [--checkpoint FILE] [--data-dir DIR] [--out DIR] [--quick]
"""

from __future__ import annotations

import time
from pathlib import Path

import _common as C
import numpy as np

import minise.functional as F
from minise import Tensor, models, no_grad
from minise.backend import to_numpy
from minise.checkpoint import load_checkpoint
from minise.data import BatchLoader, channel_stats, make_synthetic, normalize
from minise.nn import SqueezeExcitation, init
from minise.optim import SGD, MultiStepLR


def extra(parser) -> None:
    C.add_data_args(parser)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="trained weights (step 9's se_resnet20.npz, or a `minise train` checkpoint)")
    parser.add_argument("--per-class", type=int, default=None, help="test images per class (default 50, as the paper)")


args = C.setup(__doc__, extra=extra)

# %%
C.section("1. A trained SE-ResNet-20")
if args.checkpoint is not None:
    arrays, meta = load_checkpoint(args.checkpoint)
    name = meta.get("model") or meta["config"]["model"]
    reduction = meta.get("config", {}).get("reduction", 16)
    model = models.create(name, num_classes=int(meta["num_classes"]),
                          **({"reduction": reduction} if name.startswith("se_") else {}))
    model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
    mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])
    synthetic = bool(meta.get("synthetic")) or meta.get("config", {}).get("data") == "synthetic"
    if synthetic:
        data, data_label = make_synthetic(num_train=2000, num_test=500, seed=0), "SYNTHETIC data (not CIFAR)"
        print("the checkpoint was trained on the SYNTHETIC stand-in data set, so its test images are used")
    else:
        data, data_label = C.get_cifar(args.data_dir, args.download)
        if data.synthetic:
            raise SystemExit("this checkpoint was trained on CIFAR-10, which was not found: pass --data-dir")
    trained = f"checkpoint {args.checkpoint.name}"
    print(f"loaded {name} from {args.checkpoint} (trained on {data_label})")
else:
    data, data_label = C.get_cifar(args.data_dir, args.download)
    n_train, epochs, batch = (128, 1, 32) if args.quick else (1024, 2, 64)
    train = data.subset(n_train)
    mean, std = channel_stats(train.train_images)
    init.manual_seed(0)
    name = "se_resnet20"
    model = models.create(name)
    loader = BatchLoader(train.train_images, train.train_labels, batch, mean=mean, std=std, shuffle=True,
                         augment=True, rng=np.random.default_rng(0))
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    total = epochs * len(loader)
    schedule = MultiStepLR(optimizer, [total // 2, 3 * total // 4])
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for x, y in loader:  # the loop of step 9
            loss = F.cross_entropy(model(Tensor(x)), Tensor(y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    trained = f"a SHORT training ({total} iterations, {time.perf_counter() - t0:.0f} s): NOT converged"
    print(f"no --checkpoint: trained {name} for {total} iterations on {n_train} {data_label} images "
          f"(final batch loss {loss.item():.3f}); a converged network needs step 9 --full")

se_blocks = {}
for module_name, m in model.named_modules():
    if isinstance(m, SqueezeExcitation):
        stage, block = module_name.split(".")[:2]  # "layer2.0.se" -> stage 2, block 1
        se_blocks[f"SE_{stage[len('layer'):]}_{int(block) + 1}"] = m
        m.keep_excitation = True
print("SE blocks:", ", ".join(f"{k} (C = {m.channels})" for k, m in se_blocks.items()))
C.claim(len(se_blocks) == 9, "SE-ResNet-20 has 9 SE blocks to look into")

# %%
C.section("2. Collect s for every test image, at every SE block")
per_class = args.per_class or (10 if args.quick else 50)
labels_all = data.test_labels
idx = np.concatenate([np.flatnonzero(labels_all == k)[:per_class] for k in range(data.num_classes)])
images, labels = data.test_images[idx], labels_all[idx]
model.eval()
collected: dict[str, list[np.ndarray]] = {k: [] for k in se_blocks}
correct = 0
with no_grad():
    for start in range(0, len(idx), 100):
        x = normalize(images[start:start + 100], mean, std)
        logits = model(Tensor(x))
        correct += int((to_numpy(logits.data).argmax(axis=1) == labels[start:start + 100]).sum())
        for k, m in se_blocks.items():
            collected[k].append(to_numpy(m.excitation))
s_all = {k: np.concatenate(v) for k, v in collected.items()}
acc = correct / len(idx)
print(f"{len(idx)} test images ({per_class} per class); accuracy on them {100 * acc:.1f}%")
for k, s in s_all.items():
    C.claim(s.shape == (len(idx), se_blocks[k].channels) and ((s > 0) & (s < 1)).all(),
            f"{k}: s has shape (N, C) = {s.shape}, every s_c in (0, 1)")


def eta_squared(s: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Per channel: between-class variance / total variance of s_c."""
    grand = s.mean(axis=0)
    between = sum((y == c).sum() * (s[y == c].mean(axis=0) - grand) ** 2 for c in range(k))
    total = ((s - grand) ** 2).sum(axis=0) + 1e-30
    return between / total


def spread(s: np.ndarray, y: np.ndarray, k: int) -> float:
    """Standard deviation over classes of the class-mean excitation, averaged over channels."""
    return float(np.stack([s[y == c].mean(axis=0) for c in range(k)]).std(axis=0).mean())


C.section("3. How class-specific is each block?")
k_cls = data.num_classes
rng = np.random.default_rng(0)
shuffled = rng.permutation(labels)  # class-blind: the same images with labels shuffled
eta = {k: eta_squared(s, labels, k_cls) for k, s in s_all.items()}
eta_chance = {k: float(eta_squared(s, shuffled, k_cls).mean()) for k, s in s_all.items()}
spr = {k: spread(s, labels, k_cls) for k, s in s_all.items()}
spr_chance = {k: spread(s, shuffled, k_cls) for k, s in s_all.items()}
print(f"{'block':7} {'C':>3} {'mean s':>7} {'s > 0.9':>8} {'spread':>8} {'(shuffled)':>11} "
      f"{'η²':>7} {'(shuffled)':>11}")
for k, s in s_all.items():
    print(f"{k:7} {s.shape[1]:>3} {s.mean():>7.3f} {100 * (s > 0.9).mean():>7.1f}% {spr[k]:>8.4f} "
          f"{spr_chance[k]:>11.4f} {eta[k].mean():>7.3f} {eta_chance[k]:>11.3f}")
C.claim(all(0 <= e.min() and e.max() <= 1 for e in eta.values()), "η² lies in [0, 1] for every channel")

# %%
shown_blocks = ["SE_1_1", "SE_2_1", "SE_3_1", "SE_3_3"]
shown_classes = [c for c in (0, 1, 3, 8) if c < data.num_classes]
colors = C.plt.cm.tab10(np.arange(10))
fig, axes = C.plt.subplots(1, len(shown_blocks), figsize=(5 * len(shown_blocks), 4.3), sharey=True)
for ax, k in zip(axes, shown_blocks):
    s = s_all[k]
    ch = np.arange(s.shape[1])
    ax.plot(ch, s.mean(axis=0), color="k", lw=2, label="all classes")
    for c in shown_classes:
        ax.plot(ch, s[labels == c].mean(axis=0), color=colors[c], lw=1, label=data.classes[c])
    ax.set_title(f"{k} ({s.shape[1]} channels): spread {spr[k]:.3f}, η² {eta[k].mean():.2f}", fontsize=10)
    ax.set_xlabel("channel index c")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
axes[0].set_ylabel(f"mean excitation s_c over {per_class} images per class")
axes[-1].legend(fontsize=8, loc="lower right")
fig.suptitle(f"Step 10: excitations per class, early → late blocks of {name} on {data_label} ({trained})",
             fontsize=10)
C.save(fig, args.out, "excitation_per_class.png")

fig, axes = C.plt.subplots(1, 3, figsize=(17, 4.4))
names = list(s_all)
for ax, true, blind, label in ((axes[0], spr, spr_chance, "spread of class means of s_c (units of s)"),
                               (axes[1], {k: e.mean() for k, e in eta.items()}, eta_chance,
                                "η² (fraction of variance, 0..1)")):
    ax.plot(range(9), [true[k] for k in names], "o-", label="true labels")
    ax.plot(range(9), [blind[k] for k in names], "s--", color="gray", label="labels shuffled (chance level)")
    ax.set_xticks(range(9))
    ax.set_xticklabels(names, rotation=45)
    ax.set_xlabel("SE block (stage_block), input → output")
    ax.set_ylabel(label)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
axes[0].set_title("how far apart the class curves lie")
axes[1].set_title("how much of s's variation follows the class")
ax = axes[2]
ax.violinplot([s_all[k].ravel() for k in names], positions=range(9), showmedians=True)
ax.set_xticks(range(9))
ax.set_xticklabels(names, rotation=45)
ax.set_xlabel("SE block (stage_block), input → output")
ax.set_ylabel("excitation s_c (all images, all channels)")
ax.set_title("distribution of s by depth (near 1 = close to identity)")
ax.set_ylim(0, 1)
ax.grid(alpha=0.3)
fig.suptitle(f"Step 10: {name} on {data_label} ({trained})", fontsize=10)
C.save(fig, args.out, "excitation_by_depth.png")

print("\nStep 10 done. Read the figures against the paper's Sec. 7.2 only for a converged network.")
