"""First-in first-out memory bank of mask prototypes (the extra negatives of the loss)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['PrototypeMemoryBank']


class PrototypeMemoryBank(nn.Module):
    """A queue of ``size`` unit vectors of ``dims`` dimensions (buffers, so saved with the model).

    Only entries written by :meth:`enqueue` are used as negatives; a fresh bank has none.
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
        """Push (N, D) prototypes (normalised here), overwriting the oldest when full."""
        if self.size == 0 or prototypes.numel() == 0:
            return
        prototypes = F.normalize(prototypes.detach().to(self.bank.dtype), dim=1)[-self.size:]
        n = prototypes.shape[0]
        idx = (int(self.ptr) + torch.arange(n, device=self.bank.device)) % self.size
        self.bank[idx] = prototypes
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.count.fill_(min(self.size, int(self.count) + n))
