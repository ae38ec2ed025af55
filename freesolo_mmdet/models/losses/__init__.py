from .pairwise_affinity_loss import PairwiseAffinityLoss
from .projection_loss import AvgProjLoss, MaxProjLoss

__all__ = ['MaxProjLoss', 'AvgProjLoss', 'PairwiseAffinityLoss']
