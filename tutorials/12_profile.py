"""Step 12: where a training step spends its time, op by op.
=========================================================

The lesson
----------
A training step of SE-ResNet-20 is a few hundred op calls: each layer's forward on the way up,
each backward on the way down (steps 1–7), then the SGD update. ``minise.profile`` times every
op's forward and backward separately and adds them up by op type::

    with minise.profile.record() as prof:          # every Function's forward and backward timed
        loss = F.cross_entropy(model(x), t)
        loss.backward()
    print(prof.table())                            # share of the step, ms, calls, MB moved, GB/s

What to look for in the table and the bar chart:

- **Convolutions take most of the time**, and their backward costs about twice their forward: it
  computes two products (∂L/∂W and ∂L/∂x) where forward computes one.
- **Batch norm, ReLU, the residual add and the SE scale are memory-bound**: they do one or two
  multiply-adds per number but must read and write every number of a feature map, so their time
  follows the bytes they move (the MB column), not their arithmetic.
- **The SE block is cheap**: its squeeze, two small fully connected layers, sigmoid and scale
  together are a few percent of the step (the paper: about 2% for SE-ResNet-50 on a CPU).
- "autograd and Python (rest)" is the bookkeeping between ops: ordering the graph, adding up the
  gradients of a tensor used twice (the residual input), wrapping arrays in Tensors.

The calls column counts the network's layers: ResNet-20 has 19 convolutions (a stem and two per
block), SE-ResNet-20 one SE block (one scale) per residual block.

On the CPU the conv, batch norm, ReLU and SE scale hand their work to ``minise/fast/`` (the same
numbers in fewer passes over memory; steps 3–7 teach the textbook code in ``minise/functional/``).
Run with ``MINISE_FAST=0`` to profile the textbook code itself and compare the two tables.

Timings move with the machine's load; the shares move less. ``benchmarks/profile_step.py`` runs the
same profile from the command line.

Run::

    python tutorials/12_profile.py [--out DIR] [--quick] [--model se_resnet20] [--batch 128]
"""

from __future__ import annotations

import _common as C

from minise import models, nn, profile


def extra(parser) -> None:
    parser.add_argument("--model", default=None, help="network (default se_resnet20; se_resnet8 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 128; 16 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="profiled steps (default 3; 1 with --quick)")


args = C.setup(__doc__, extra=extra)
name = args.model or ("se_resnet8" if args.quick else "se_resnet20")
batch = args.batch or (16 if args.quick else 128)
steps = args.steps or (1 if args.quick else 3)

# %%
C.section(f"Profile {steps} training step(s) of {name}, batch {batch} × 3×32×32")
nn.init.manual_seed(0)
model = models.create(name)
prof = profile.profile_training(model, batch=batch, steps=steps, warmup=1)
print(prof.table())

by_op: dict[str, float] = {}
for row in prof.rows.values():
    by_op[row.op] = by_op.get(row.op, 0.0) + prof.share(row)
conv_share = by_op["Conv2d"]
se_ops = ("GlobalAvgPool2d", "Sigmoid", "Scale")
se_share = sum(by_op.get(op, 0.0) for op in se_ops)

C.section("What the numbers say")
print(f"convolution, forward + backward: {conv_share:.0%} of the step")
print(f"the SE block's squeeze, sigmoid and scale: {se_share:.1%} (its two small FC layers: "
      f"{by_op.get('Linear', 0.0):.1%}, with the classifier)")
C.claim(abs(sum(prof.share(r) for r in prof.rows.values()) - 1) < 1e-9,
        "the rows add up to the whole step (ops, the SGD update, and the rest)")
C.claim(conv_share == max(by_op.values()), f"the convolutions are the largest op type ({conv_share:.0%})")
depth = int("".join(c for c in name if c.isdigit()))
blocks = (depth - 2) // 2  # CIFAR ResNet: 6n + 2 layers, 3n residual blocks
C.claim(prof.rows[("Conv2d", "forward")].calls == steps * (2 * blocks + 1),
        f"{2 * blocks + 1} convolutions per step: the stem and two per residual block ({blocks} blocks)")
if name.startswith("se_"):
    C.claim(prof.rows[("Scale", "forward")].calls == steps * blocks, f"one SE scale per residual block ({blocks})")

fig = prof.figure(title=f"{name}, batch {batch}: where a training step goes "
                        f"({prof.total_seconds / steps * 1e3:.0f} ms per step)")
path = args.out / "step_profile.png"
fig.savefig(path, dpi=110)
print(f"figure: {path}")
