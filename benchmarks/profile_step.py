"""Where minise's training step spends its time: per op and direction, the share, time and bytes.

    python benchmarks/profile_step.py --model se_resnet20                 # table, and profile_se_resnet20.png
    python benchmarks/profile_step.py --model resnet20 --batch 64 --steps 5 --out /tmp/p.png

A few training steps (SGD, momentum 0.9, weight decay 1e-4, cross-entropy) on random CIFAR-sized
data, timed by ``minise.profile`` (see its docstring for what is measured). Timings move with the
load of the machine: compare shares, or runs made back to back.

(Not named profile.py: a script's folder comes first on sys.path, and a benchmarks/profile.py would
shadow the standard library's ``profile``, which torch imports through cProfile.)
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minise.models as M
from minise import nn, speed
from minise.profile import profile_training


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="se_resnet20", help="a name minise.models.create knows")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=None, help="image size (default 32 for CIFAR, 224 else)")
    parser.add_argument("--out", default=None, help="bar chart PNG (default profile_MODEL.png)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's malloc as it is (default: keep freed memory, as the minise command does)")
    args = parser.parse_args(argv)
    if not args.default_allocator:
        speed.keep_freed_memory()
    nn.init.manual_seed(0)
    model = M.create(args.model).to(args.device)
    classes = list(model.parameters())[-1].shape[0]  # the classifier's bias: 10 for CIFAR, 1000 for ImageNet
    size = args.size or (32 if classes == 10 else 224)
    prof = profile_training(model, batch=args.batch, steps=args.steps, warmup=args.warmup,
                            input_shape=(3, size, size), num_classes=classes)
    print(f"{args.model}, batch {args.batch} × 3×{size}×{size} float32 on {args.device}, {args.steps} steps "
          f"after {args.warmup} warm-up; minise threads over the batch: {speed.NUM_THREADS}\n")
    print(prof.table())
    out = args.out or f"profile_{args.model}.png"
    prof.save_figure(out, title=f"{args.model}, batch {args.batch}: where a training step goes "
                                f"({prof.total_seconds / prof.steps * 1e3:.0f} ms)")
    print(f"\nbar chart: {out}")


if __name__ == "__main__":
    main()
