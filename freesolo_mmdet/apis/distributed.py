"""Process groups for torchrun launches, on GPUs or on CPUs (gloo), for every tool and the pipeline."""
import torch
from mmengine.config import Config
from mmengine.dist import init_dist, is_distributed
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

__all__ = ['init_distributed', 'setup_cpu_distributed']


def init_distributed(backend: str = 'gloo') -> None:
    """Join the torchrun process group once (a second call does nothing).

    With CUDA, mmengine's ``init_dist`` (which also selects ``LOCAL_RANK``'s GPU); without it,
    gloo directly, since ``init_dist`` calls ``torch.cuda.set_device``, which CPU-only torch lacks.
    """
    if is_distributed():
        return
    if torch.cuda.is_available():
        init_dist('pytorch', backend=backend)
    else:
        torch.distributed.init_process_group(backend='gloo')


def setup_cpu_distributed(cfg: Config) -> None:
    """Join the torchrun process group over gloo and let the Runner wrap a CPU model in DDP.

    mmengine's Runner would call ``init_dist`` (CUDA only) and pass ``device_ids=[LOCAL_RANK]`` to
    DDP (GPU modules only); after this call it skips the first and the wrapper gets ``None``.
    ``cfg.find_unused_parameters`` and ``cfg.model_wrapper_cfg`` are honoured.
    """
    init_distributed('gloo')
    wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.update(cfg.get('model_wrapper_cfg') or {})
    if issubclass(MODEL_WRAPPERS.get(wrapper['type']), DistributedDataParallel):
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
