import json
import os
import subprocess
import sys

import pytest

from clipig.run import allocator

# a fresh process allocates and frees a 64 MiB tensor a few times, as epochs do, then once more: the page
# faults of that allocation say whether the freed pages were kept (none) or handed back to the system (one a page)
SCRIPT = """
import json, resource, sys, torch
from clipig.run import allocator, threads
if sys.argv[1] != "plain":
    threads.configure(1)
for _ in range(3):
    x = torch.ones(1 << 24); del x
if sys.argv[1] == "release":
    allocator.release()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(1 << 24)
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def faults(mode: str, **environ) -> int:
    env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS and k != "GLIBC_TUNABLES"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120,
                            env={**env, **environ}, check=True)
    return json.loads(result.stdout.splitlines()[-1])["faults"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_every_entry_point_keeps_freed_memory_for_the_next_allocation():
    plain, kept = faults("plain"), faults("configure")
    assert plain >= 32  # 64 MiB touched afresh: a fault per page (4 KiB, or 2 MiB huge pages); not blind
    assert kept < plain / 20
    assert faults("configure", MALLOC_MMAP_THRESHOLD_="65536") > plain / 2  # the user's own setting stays
    assert faults("release") > plain / 2  # handed back at the end of a render


def test_a_render_hands_the_kept_memory_back_at_its_end(monkeypatch):
    from conftest import make_engine
    released = []
    monkeypatch.setattr(allocator, "release", lambda: released.append(True))
    make_engine("epochs: 2\nresolution: 32\ntargets:\n  - features:\n      - text: a cat\n").run()
    assert released == [True]


def test_user_settings_are_recognised():
    assert not allocator.user_tuned({})
    assert allocator.user_tuned({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert allocator.user_tuned({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})
    assert not allocator.user_tuned({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
