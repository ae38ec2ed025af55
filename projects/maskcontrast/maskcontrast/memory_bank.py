"""First-in first-out memory bank of mask prototypes (the extra negatives of the loss)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_gather, get_world_size

__all__ = ['PrototypeMemoryBank', 'gather_rows']


@torch.no_grad()
def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """(N_r, D) rows of every rank, concatenated in rank order (the same (sum N_r, D) on every rank).

    Ranks may hold different numbers of rows: they are padded to the largest for the collective.
    Outside a process group, ``rows`` itself.
    """
    if get_world_size() == 1:
        return rows
    counts = all_gather(torch.tensor([rows.shape[0]], device=rows.device))
    longest = int(max(int(c) for c in counts))
    padded = rows.new_zeros((longest, ) + tuple(rows.shape[1:]))
    padded[:rows.shape[0]] = rows
    return torch.cat([part[:int(c)] for part, c in zip(all_gather(padded), counts)])


class PrototypeMemoryBank(nn.Module):
    """A queue of ``size`` unit vectors of ``dims`` dimensions (buffers, so saved with the model).

    Only entries written by :meth:`enqueue` are used as negatives; a fresh bank has none.

    Under DDP the bank is global: :meth:`enqueue` gathers the prototypes of every rank (in rank
    order) and every rank writes all of them, so the banks of all ranks stay identical, as a single
    process with the total batch would have it (MoCo's queue does the same with its keys).
    """

    def __init__(self, size: int, dims: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer('bank', torch.zeros(size, dims))
        self.register_buffer('ptr', torch.zeros((), dtype=torch.long))
        self.register_buffer('count', torch.zeros((), dtype=torch.long))

    def negatives(self) -> torch.Tensor:
        """(K, D) stored prototypes, K <= size (a copy: the bank changes before backward runs)."""
        return self.bank[:int(self.count)].clone()

    @torch.no_grad()
    def enqueue(self, prototypes: torch.Tensor) -> None:
        """Push (N, D) prototypes of this rank and (under DDP) of every other rank, normalised here,
        overwriting the oldest when full. Every rank must call it (it is a collective)."""
        prototypes = gather_rows(F.normalize(prototypes.detach().to(self.bank.dtype), dim=1))
        if self.size == 0 or prototypes.numel() == 0:
            return
        prototypes = prototypes[-self.size:]
        n = prototypes.shape[0]
        idx = (int(self.ptr) + torch.arange(n, device=self.bank.device)) % self.size
        self.bank[idx] = prototypes
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.count.fill_(min(self.size, int(self.count) + n))
