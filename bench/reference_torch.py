"""The PyTorch reference's W-MSE training step, for `bench.train_step` to compare against.

Run with a Python that has PyTorch (not a dependency of wmse_tf):
  python -m bench.reference_torch [--batch 128] [--width 64] [--views 2] [--repeats 3]

A re-implementation, in the structure of htdt/self-supervised (methods/w_mse.py,
methods/whitening.py, model.py), of one step: torchvision's ResNet-18 layout with the
CIFAR stem (3x3 conv, no max-pool), the encoder called once per view, the projector
(Linear 1024, BN, ReLU, Linear emb) on the concatenation, then for each random
sub-batch of w_size and each view one Cholesky whitening (torch.linalg.cholesky +
solve_triangular, as the reference's Whitening2d), the normalized MSE of every pair of
views, Adam. Prints one line: `reference img/s <float>` (source images per second,
each with `views` views, median of `repeats` steps after a warm-up step); with --serve, one
step per line of stdin, its seconds printed (bench.train_step alternates it with its own).
"""

import argparse
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, projection shortcut when the shape changes)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


def resnet18_cifar(width):
    """ResNet-18 with the CIFAR stem; output: pooled features [B, 8 * width]."""
    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
        layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), cin


def whiten(x, eps=0.0):
    """Cholesky whitening of one sub-batch [n, d] (the reference's Whitening2d in training mode)."""
    xn = x - x.mean(0, keepdim=True)
    cov = xn.T @ xn / (x.shape[0] - 1)
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    chol = torch.linalg.cholesky((1 - eps) * cov + eps * eye)
    w = torch.linalg.solve_triangular(chol, eye, upper=False)
    return xn @ w.T


def norm_mse(a, b):
    return (2 - 2 * (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)).mean()


def wmse_loss(h, views, batch, w_size, w_iter=1):
    """The reference's loop: per iteration, per sub-batch, per view one whitening; then all pairs."""
    loss = 0.0
    for _ in range(w_iter):
        z = torch.empty_like(h)
        for idx in torch.randperm(batch).view(-1, w_size):
            for i in range(views):
                z[idx + i * batch] = whiten(h[idx + i * batch])
        for i in range(views - 1):
            for j in range(i + 1, views):
                loss = loss + norm_mse(z[i * batch:(i + 1) * batch], z[j * batch:(j + 1) * batch])
    return loss / (w_iter * views * (views - 1) // 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--emb", type=int, default=64)
    parser.add_argument("--w_size", type=int, default=0, help="0 = the batch (as bench.train_step)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", action="store_true",
                        help="after the warm-up, run one step per line read from stdin and print its "
                             "seconds (so a benchmark can time it alternately with its own steps)")
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder, out = resnet18_cifar(args.width)
    head = nn.Sequential(nn.Linear(out, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, args.emb))
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    samples = [torch.randn(args.batch, 3, 32, 32) for _ in range(args.views)]
    w_size = args.w_size or args.batch

    def step():
        start = time.perf_counter()
        h = head(torch.cat([encoder(x) for x in samples]))
        loss = wmse_loss(h, args.views, args.batch, w_size)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    step()  # warm-up
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    if args.serve:
        for _ in sys.stdin:
            print(f"step {step():.6f}", flush=True)
        return
    times = [step() for _ in range(args.repeats)]
    print("step seconds", [round(t, 2) for t in times])
    print(f"reference img/s {args.batch / float(np.median(times)):.2f}")


if __name__ == "__main__":
    main()
