"""Host memory kept for reuse (``keep_freed_host_memory``, ``KeepFreedMemoryHook``): counted in page faults."""
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from freesolo_mmdet.engine import KeepFreedMemoryHook, keep_freed_memory_on_cpu, wants_freed_memory_kept
from freesolo_mmdet.utils.host_memory import _libc

needs_glibc = pytest.mark.skipif(_libc() is None, reason='the C library is not glibc')

# In a fresh process (the setting is process-wide): the minor page faults of filling a 256 MiB tensor, freed
# again at once, for the fourth time (glibc takes two rounds to settle on a block), with glibc's defaults or with
# freed memory kept.
FAULTS_OF_A_TENSOR_ONCE_MORE = '''
import resource, sys, torch
from freesolo_mmdet.utils import keep_freed_host_memory
assert keep_freed_host_memory(sys.argv[1] == 'keep')
for _ in range(3):
    torch.ones(64 * 2**20)  # 256 MiB of float32
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(64 * 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


@needs_glibc
def test_a_freed_tensor_is_reused_without_page_faults_only_when_kept():
    faults = {mode: int(subprocess.run([sys.executable, '-c', FAULTS_OF_A_TENSOR_ONCE_MORE, mode], check=True,
                                       capture_output=True, text=True).stdout.split()[-1])
              for mode in ('glibc', 'keep')}
    pages = 256 * 2**20 // 4096
    assert faults['glibc'] >= pages // 2  # a fresh mmap, faulted in page by page (fewer with huge pages)
    assert faults['keep'] < pages // 100  # the same heap pages again


def test_only_a_model_on_the_cpu_keeps_freed_memory():
    assert keep_freed_memory_on_cpu(torch.nn.Linear(2, 2, device='meta')) is None
    assert keep_freed_memory_on_cpu(torch.nn.Linear(2, 2)) is (_libc() is not None)


def test_configs_ask_for_it_by_hook():
    assert wants_freed_memory_kept(Config(dict(custom_hooks=[dict(type='KeepFreedMemoryHook')])))
    assert wants_freed_memory_kept(Config(dict(custom_hooks=[dict(type=KeepFreedMemoryHook)])))
    assert not wants_freed_memory_kept(Config(dict(custom_hooks=[dict(type='ChannelsLastHook')])))
    assert not wants_freed_memory_kept(Config(dict()))
