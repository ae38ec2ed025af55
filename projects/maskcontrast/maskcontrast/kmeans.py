"""K-means in torch (no sklearn): k-means++ seeding, Lloyd iterations, several restarts."""
from typing import Optional, Tuple

import torch

__all__ = ['kmeans_assign', 'kmeans']


def kmeans_assign(x: torch.Tensor, centers: torch.Tensor, chunk: int = 262144) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest center (squared Euclidean) of every row of x.

    Args:
        x (Tensor): (N, D) points.
        centers (Tensor): (K, D) centers.

    Returns:
        tuple: labels (N, ) long and squared distances (N, ).
    """
    labels, dists = [], []
    c_sq = (centers * centers).sum(1)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk]
        d = (part * part).sum(1, keepdim=True) - 2 * part @ centers.t() + c_sq
        dist, lab = d.min(1)
        labels.append(lab)
        dists.append(dist.clamp(min=0))
    return torch.cat(labels), torch.cat(dists)


def _plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    centers = x[torch.randint(x.shape[0], (1, ), generator=gen)]
    for _ in range(1, k):
        _, d = kmeans_assign(x, centers)
        total = d.sum()
        probs = d / total if total > 0 else torch.full_like(d, 1. / d.numel())
        centers = torch.cat([centers, x[torch.multinomial(probs, 1, generator=gen)]])
    return centers


def kmeans(x: torch.Tensor, k: int, iters: int = 100, n_init: int = 3, seed: int = 0,
           tol: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Fit K-means on (N, D) float points.

    Args:
        x (Tensor): (N, D) points, N >= k.
        k (int): Number of clusters.
        iters (int): Maximum Lloyd iterations per restart.
        n_init (int): Restarts (k-means++ seeding each); the lowest inertia wins.
        seed (int): Seed of the restarts.
        tol (float): Stop a restart when the inertia improves by less than this (relative).

    Returns:
        tuple: centers (k, D), labels (N, ), inertia (sum of squared distances).
    """
    if x.dim() != 2 or x.shape[0] < k:
        raise ValueError(f'kmeans needs an (N >= k, D) matrix, got {tuple(x.shape)} for k={k}')
    x = x.float()
    gen = torch.Generator().manual_seed(seed)
    best: Optional[Tuple[torch.Tensor, torch.Tensor, float]] = None
    for _ in range(n_init):
        centers = _plus_plus(x, k, gen)
        prev = float('inf')
        for _ in range(iters):
            labels, d = kmeans_assign(x, centers)
            inertia = float(d.sum())
            sums = torch.zeros_like(centers).index_add_(0, labels, x)
            counts = torch.bincount(labels, minlength=k).to(x.dtype)
            empty = counts == 0
            centers = sums / counts.clamp(min=1).unsqueeze(1)
            if empty.any():  # re-seed an empty cluster at the farthest points
                far = d.topk(int(empty.sum())).indices
                centers[empty] = x[far]
            if prev - inertia <= tol * max(prev, 1e-12) and not empty.any():
                break
            prev = inertia
        labels, d = kmeans_assign(x, centers)
        inertia = float(d.sum())
        if best is None or inertia < best[2]:
            best = (centers, labels, inertia)
    return best
