"""Step 11: the same code on the GPU, with CuPy.
=============================================

The lesson
----------
No op in minise calls NumPy directly on data. Each one asks the data where it lives::

    xp = get_array_module(x)       # numpy for NumPy arrays, cupy for CuPy arrays
    y = xp.maximum(x, 0)

and CuPy copies NumPy's interface, so the whole library (ops, SE block, networks, optimiser,
data augmentation) runs unchanged on an NVIDIA GPU once the arrays are CuPy arrays. Moving them
is one of three calls::

    minise.set_default_device("cuda")     # new tensors and parameters are created on the GPU
    x = x.to("cuda")                      # one tensor (gradients flow back across the copy)
    model.to("cuda")                      # every parameter and buffer of a network, in place

Things that differ on a GPU (and that the library's tests check on a strict simulated device):
arrays on two devices never mix silently (an error says to move one); the GPU runs
asynchronously, so a timing must wait for it (``minise.backend.synchronize()``) or it measures
only the launch; pulling a Python number out (``float(x)``, ``.item()``) waits for the GPU too.

With CuPy and a GPU present this step times a convolution and an SE-ResNet-20 training step on
both devices and checks that they compute the same numbers. Without one it says so, shows the
error you get, and runs the device switch on the simulated GPU that minise ships for testing
(``minise.testing.simulated_gpu``: NumPy underneath, CuPy's strictness on top) so you can see the
same code path.

Run::

    python tutorials/11_gpu_cupy.py [--out DIR] [--quick]
"""

from __future__ import annotations

import contextlib

import _common as C
import numpy as np

import minise
import minise.functional as F
from minise import DeviceError, Tensor, backend, models
from minise.nn import init
from minise.optim import SGD
from minise.testing import simulated_gpu

args = C.setup(__doc__)
rng = np.random.default_rng(0)


def train_step_fn(model, x, y, opt):
    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def make_net(device: str):
    init.manual_seed(0)
    net = models.create("se_resnet20").to(device)
    return net, SGD(net.parameters(), lr=0.01, momentum=0.9)


def time_on(device: str, batches: list[int], repeat: int) -> dict[str, float]:
    """Seconds for a conv forward+backward and an SE-ResNet-20 training step per batch size."""
    sync = (lambda: backend.synchronize(device)) if device != "cpu" else None
    out = {}
    xc = Tensor(rng.standard_normal((128, 64, 8, 8)).astype(np.float32), device=device, requires_grad=True)
    wc = Tensor((rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32), device=device, requires_grad=True)
    gy = backend.to_device(np.ones((128, 64, 8, 8), dtype=np.float32), device)
    conv = lambda: F.conv2d(xc, wc, padding=1).backward(gy)  # noqa: E731
    conv()  # warm-up (CuPy compiles its kernels on first use)
    out["conv 3×3, 64→64 ch, 8×8, batch 128\n(forward + backward)"] = C.best_time(conv, repeat, sync)
    net, opt = make_net(device)
    for b in batches:
        x = Tensor(rng.standard_normal((b, 3, 32, 32)).astype(np.float32), device=device)
        y = Tensor(backend.to_device(rng.integers(0, 10, b), device))
        step = train_step_fn(net, x, y, opt)
        step()  # warm-up
        out[f"SE-ResNet-20 training step\nbatch {b}"] = C.best_time(step, repeat, sync)
    return out


# %%
C.section("1. Is there a GPU?")
has_gpu = backend.gpu_available()
print("CuPy with a usable GPU:", "yes" if has_gpu else "no")
if not has_gpu:
    try:
        minise.set_default_device("cuda")
    except DeviceError as exc:
        print("minise.set_default_device('cuda') says:\n  DeviceError:", exc)
    C.claim(minise.get_default_device() == "cpu", "without a GPU the default device stays 'cpu'")

# %%
C.section("2. The device switch")
if not has_gpu:
    # minise.testing ships a strict simulated GPU: inside the block below, "cuda" means it
    print("no GPU: in this section 'cuda' means the SIMULATED device of minise.testing "
          "(NumPy arrays in a CuPy-strict wrapper)")
with contextlib.nullcontext() if has_gpu else simulated_gpu():
    x_cpu = Tensor(rng.standard_normal((4, 16, 8, 8)), requires_grad=True)  # float64 for an exact comparison
    x_gpu = x_cpu.to("cuda")  # a copy on the device, still connected to x_cpu in the graph
    print(f"x_cpu.device = {x_cpu.device!r} ({type(x_cpu.data).__module__}.{type(x_cpu.data).__name__}), "
          f"x_gpu.device = {x_gpu.device!r} ({type(x_gpu.data).__module__}.{type(x_gpu.data).__name__})")
    C.claim(minise.get_array_module(x_gpu.data) is not np,
            "get_array_module(x_gpu.data) is the GPU array module, not NumPy")
    se_cpu = minise.nn.SqueezeExcitation(16, reduction=4).double()
    se_gpu = minise.nn.SqueezeExcitation(16, reduction=4).double()
    se_gpu.load_state_dict(se_cpu.state_dict())
    se_gpu.to("cuda")  # model.to: every parameter moves
    print("se_gpu.fc1.weight.device =", repr(se_gpu.fc1.weight.device))
    y_cpu, y_gpu = se_cpu(x_cpu), se_gpu(x_gpu)
    C.claim(np.allclose(y_cpu.numpy(), y_gpu.numpy(), rtol=1e-12, atol=1e-12),
            "the SE block gives the same numbers on both devices (float64)")
    y_gpu.sum().backward()  # the gradient comes back through .to() to the CPU tensor
    g_through_gpu = x_cpu.grad.numpy()
    x_cpu.grad = None
    y_cpu.sum().backward()
    C.claim(np.allclose(g_through_gpu, x_cpu.grad.numpy(), rtol=1e-12, atol=1e-12),
            "∂L/∂x computed on the device and carried back by .to() equals the CPU one")
    try:
        se_cpu(x_gpu)
        mixed = False
    except (DeviceError, TypeError) as exc:
        print(f"a CPU module on a device tensor: {type(exc).__name__}: {str(exc)[:150]}")
        mixed = True
    C.claim(mixed, "mixing devices is an error with a message, never a silent copy")
    minise.set_default_device("cuda")
    fresh = models.create("se_resnet20")
    print(f"after set_default_device('cuda'): Tensor([...]).device = {Tensor([1.0, 2.0]).device!r}; "
          f"a new model's parameters live on {next(fresh.parameters()).device!r}")
    C.claim(next(fresh.parameters()).device == "cuda", "set_default_device('cuda'): new parameters are created there")
    minise.set_default_device("cpu")

# %%
C.section("3. Timings")
batches = [32] if args.quick else [32, 128]
repeat = 2 if args.quick else 3
results = {"cpu (NumPy)": time_on("cpu", batches, repeat)}
if has_gpu:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    results[f"cuda (CuPy, {gpu_name})"] = time_on("cuda", batches, repeat)
else:
    print("no GPU: only CPU timings (the simulated device is NumPy underneath: timing it would mean nothing)")
labels = list(next(iter(results.values())))
for lab in labels:
    row = "  ".join(f"{dev}: {res[lab] * 1e3:9.2f} ms" for dev, res in results.items())
    ratio = ""
    if len(results) == 2:
        a, b = (res[lab] for res in results.values())
        ratio = f"  → GPU {a / b:.1f}× faster"
    print(f"{lab.replace(chr(10), ', '):55s} {row}{ratio}")
if len(results) == 2 and len(batches) == 2:
    gpu = list(results.values())[1]
    t_small, t_big = (gpu[f"SE-ResNet-20 training step\nbatch {b}"] for b in batches)
    print(f"on the GPU, {batches[1] // batches[0]}× the images cost {t_big / t_small:.1f}× the time: "
          + ("the step is bound by launching many small kernels from Python, not by arithmetic"
             if t_big / t_small < 2 else "the arithmetic dominates"))

fig, ax = C.plt.subplots(figsize=(9, 4.5))
width = 0.8 / len(results)
for i, (dev, res) in enumerate(results.items()):
    ax.bar(np.arange(len(labels)) + (i - (len(results) - 1) / 2) * width, [res[k] * 1e3 for k in labels], width,
           label=dev)
ax.set_yscale("log")
ax.set_xticks(range(len(labels)))
ax.set_xticklabels(labels, fontsize=8)
ax.set_ylabel("time (ms, log scale; best of a few runs)")
ax.set_title("Step 11: the same minise code on CPU and GPU" + ("" if has_gpu else " (no GPU found: CPU only)"))
ax.legend(fontsize=8)
C.save(fig, args.out, "device_timings.png")

print("\nStep 11 done: one code base, two array modules; .to('cuda') is the whole switch.")
