"""Step 5: the squeeze. Global average pooling turns each feature map into one number (Eq. 2).
===========================================================================================

The lesson
----------
A convolution sees only its small window (3 × 3 here), so no single output unit of it can know
what the rest of the image looks like. The SE block first "squeezes" each channel u_c of a
feature map U = [u_1, …, u_C] (H × W each) into one number, its average::

    z_c = F_sq(u_c) = 1/(H·W) Σ_{i=1..H} Σ_{j=1..W} u_c(i, j)          (Eq. 2)

z ∈ R^C is a "channel descriptor": a summary of the whole image, one entry per channel, that the
excitation (step 6) uses to decide how much each channel matters for this particular image.

We make the channels easy to read: a fixed bank of eight 3 × 3 filters (red, green, blue,
brightness, and ± vertical / ± horizontal edges, each followed by a ReLU) applied with
``F.conv2d`` to real CIFAR-10 images. Then z says "how red", "how bright", "how many vertical
edges" each image is, as a whole. What z keeps and what it throws away:

- it keeps "how much": a nearest-class-mean classifier on these 8 numbers alone beats chance;
- it throws away "where": shuffling the pixels leaves the colour entries of z exactly the same,
  and a mirror image only swaps the +/− vertical-edge entries.

Run::

    python tutorials/05_squeeze.py [--data-dir DIR] [--out DIR] [--quick]
"""

from __future__ import annotations

import _common as C
import numpy as np

import minise.functional as F
from minise import Tensor

args = C.setup(__doc__, extra=C.add_data_args)
rng = np.random.default_rng(0)
data, data_label = C.get_cifar(args.data_dir, args.download)

# %%
C.section("1. A bank of eight readable 3×3 filters")
names = ["red", "green", "blue", "brightness", "vert. edge +", "vert. edge −", "horiz. edge +", "horiz. edge −"]
bank = np.zeros((8, 3, 3, 3))
for c in range(3):
    bank[c, c, 1, 1] = 1.0  # the pixel's own colour
bank[3, :, 1, 1] = 1 / 3  # brightness = mean of R, G, B
sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 2  # ∂/∂j of brightness: vertical edges
for c in range(3):
    bank[4, c] = sobel_x / 3
    bank[5, c] = -sobel_x / 3
    bank[6, c] = sobel_x.T / 3  # ∂/∂i: horizontal edges
    bank[7, c] = -sobel_x.T / 3
print("filters W: (C_out, C_in, kh, kw) =", bank.shape, "channels:", ", ".join(names))


def features(images_uint8: np.ndarray) -> np.ndarray:
    """u = ReLU(conv2d(x, bank)), x in [0, 1] padded by repeating its border pixels: (N, 8, 32, 32).

    (Zero padding would draw a bright edge around every image; repeating the border does not.)
    """
    x = np.pad(images_uint8.astype(np.float64) / 255.0, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    return F.relu(F.conv2d(Tensor(x), Tensor(bank))).numpy()


def squeeze(u: np.ndarray) -> np.ndarray:
    return F.global_avg_pool2d(Tensor(u)).numpy()


n_train, n_test = (1000, 500) if args.quick else (5000, 2000)
n_train = min(n_train, len(data.train_labels))
n_test = min(n_test, len(data.test_labels))
x_train, y_train = data.train_images[:n_train], data.train_labels[:n_train]
x_test, y_test = data.test_images[:n_test], data.test_labels[:n_test]
u_train = features(x_train)
print(f"u = ReLU(conv2d(x, W)): {u_train.shape} (N, C, H, W) for {n_train} {data_label} training images")

# %%
C.section("2. The squeeze, Eq. 2: z_c = 1/(H·W) Σ_i Σ_j u_c(i, j)")
z_train = squeeze(u_train)
h, w = u_train.shape[2:]
z_by_hand = u_train.sum(axis=(2, 3)) / (h * w)
print(f"z: {z_train.shape} (N, C); image 0: " + ", ".join(f"{n}={v:.3f}" for n, v in zip(names, z_train[0])))
C.claim(np.allclose(z_train, z_by_hand, rtol=1e-12), "global_avg_pool2d(u) = (1/HW) Σ_i Σ_j u_c(i, j)")
C.claim(np.allclose(z_train[:, :3], x_train.mean(axis=(2, 3)) / 255.0, rtol=1e-12),
        "the colour entries of z are the image's mean red, green and blue")
# its gradient spreads evenly: ∂z_c/∂u_c(i, j) = 1/(H·W) for every position
ut = Tensor(u_train[:2], requires_grad=True)
F.global_avg_pool2d(ut).backward(np.ones((2, 8)))
C.claim(np.allclose(ut.grad.numpy(), 1 / (h * w)), f"∂z_c/∂u_c(i, j) = 1/(H·W) = 1/{h * w} at every position")

# %%
C.section("3. z forgets WHERE: shuffled pixels and mirror images")
img = x_train[:1]
perm = rng.permutation(h * w)
shuffled = img.reshape(1, 3, -1)[:, :, perm].reshape(img.shape)
z0, z_shuf, z_flip = squeeze(features(img))[0], squeeze(features(shuffled))[0], squeeze(features(img[..., ::-1]))[0]
print("original:      ", np.round(z0, 4))
print("pixels shuffled:", np.round(z_shuf, 4))
print("mirrored (j→−j):", np.round(z_flip, 4))
C.claim(np.allclose(z0[:4], z_shuf[:4], rtol=1e-12),
        "shuffling the pixels leaves the colour/brightness entries of z unchanged")
C.claim(np.allclose(z0[[0, 1, 2, 3, 5, 4, 6, 7]], z_flip, rtol=1e-9, atol=1e-12),
        "a mirror image gives the same z with 'vert. edge +' and '−' swapped")

# %%
C.section("4. z keeps HOW MUCH: a nearest-class-mean classifier on 8 numbers")
z_test = squeeze(features(x_test))
mu, sd = z_train.mean(axis=0), z_train.std(axis=0) + 1e-12
zs_train, zs_test = (z_train - mu) / sd, (z_test - mu) / sd
k = data.num_classes
centroids = np.stack([zs_train[y_train == c].mean(axis=0) for c in range(k)])
pred = np.argmin(((zs_test[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
acc = float((pred == y_test).mean())
chance = 1 / k
sigma = np.sqrt(chance * (1 - chance) / n_test)
print(f"{data_label}: nearest class mean of z on {n_test} held-out images: {100 * acc:.1f}% "
      f"(chance {100 * chance:.0f}% ± {100 * sigma:.1f}%)")
C.claim(acc > chance + 4 * sigma, "the 8-number descriptor z classifies well above chance (4 standard deviations)")

# %%
classes = data.classes
first = [int(np.flatnonzero(y_train == c)[0]) for c in range(min(4, k))]
show = [3, 4, 6]  # brightness, vertical edges +, horizontal edges +
fig, axes = C.plt.subplots(len(first), 5, figsize=(15, 3.0 * len(first)))
for row, i in enumerate(first):
    ax = axes[row, 0]
    ax.imshow(x_train[i].transpose(1, 2, 0))
    ax.set_title(f"x: {classes[y_train[i]]}", fontsize=9)
    ax.set_xlabel("j (pixels)")
    ax.set_ylabel("i (pixels)")
    for col, c in enumerate(show, start=1):
        ax = axes[row, col]
        im = ax.imshow(u_train[i, c], cmap="magma")
        ax.set_title(f"u_{c} ({names[c]}): z_{c} = {z_train[i, c]:.3f}", fontsize=9)
        ax.set_xlabel("j (pixels)")
        ax.set_ylabel("i (pixels)")
        C.plt.colorbar(im, ax=ax, fraction=0.046, label="activation (0..1 scale)")
    ax = axes[row, 4]
    ax.bar(range(8), z_train[i], color=["r", "g", "b", "gray", "tab:purple", "tab:purple", "tab:olive", "tab:olive"])
    ax.set_xticks(range(8))
    ax.set_xticklabels(names, rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("z_c (mean activation)")
    ax.set_title("channel descriptor z (Eq. 2)", fontsize=9)
fig.suptitle(f"Step 5: the squeeze on {data_label}: each map u_c becomes one number z_c")
C.save(fig, args.out, "squeeze_examples.png")

fig, ax = C.plt.subplots(figsize=(8, 5.5))
means = np.stack([zs_train[y_train == c].mean(axis=0) for c in range(k)])
lim = np.abs(means).max()
im = ax.imshow(means, cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
ax.set_xticks(range(8))
ax.set_xticklabels(names, rotation=45, ha="right")
ax.set_yticks(range(k))
ax.set_yticklabels(classes)
ax.set_xlabel("channel c of the descriptor z")
ax.set_ylabel("class")
fig.colorbar(im, ax=ax, label="class mean of z_c\n(standard deviations from the mean of all images)")
ax.set_title(f"Step 5, {data_label}: per-class mean of the descriptor z (standardised)\n"
             f"nearest-class-mean accuracy from z alone: {100 * acc:.1f}% (chance {100 * chance:.0f}%)", fontsize=10)
C.save(fig, args.out, "class_descriptors.png")

print("\nStep 5 done: the squeeze gives every channel a view of the whole image, in one number.")
