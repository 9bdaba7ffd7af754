"""Where the compiled kernels are cached and when the cache is still good: every function of
bptt.fast is cached under one stamp of all of that folder's sources (jit._Locator), in a folder
named by it, since a kernel inlines functions and constants of other files there (Numba alone
keys a function by its own file: split.py's scans compiled for gemm.py's old panel width were
loaded after gemm.py changed, and gave wrong numbers)."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

import bptt
from bptt.fast import jit

FAST = os.path.dirname(os.path.abspath(jit.__file__))


def test_the_stamp_covers_every_source_of_the_folder_and_the_width():
    h = hashlib.sha256(f"lanes {jit.LANES}\n".encode())
    for name in sorted(n for n in os.listdir(FAST) if n.endswith(".py")):
        with open(os.path.join(FAST, name), "rb") as f:
            h.update(f"{name}\n".encode() + f.read())
    assert jit.STAMP == h.hexdigest()


@pytest.mark.skipif(not jit.CACHE, reason="no disk cache here")
def test_the_folders_functions_and_only_those_take_the_stamp():
    from bptt.fast import gemm

    fn = gemm.pack_panels.py_func
    loc = jit._Locator.from_function(fn, gemm.__file__)
    assert loc is not None and loc.get_source_stamp() == jit.STAMP
    assert loc.get_cache_path() == jit.cache_folder()

    def elsewhere():  # a function of another folder: Numba's own locators
        return 1

    assert jit._Locator.from_function(elsewhere, __file__) is None


PROBE = "from bptt.fast import jit, gemm; print(jit.CACHE, jit.cache_folder(), jit.STAMP); "
PROBE += "print(type(jit._Locator.from_function(gemm.pack_panels.py_func, gemm.__file__)).__name__)"


def _probe(env: dict, cwd=None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_widths_and_installs_keep_their_kernels_apart_and_an_unwritable_folder_caches_nothing(tmp_path):
    """Each vector width has a folder and stamp of its own (hosts of two widths, or a
    BPTT_LANES run, sharing a cache keep both sets); a NUMBA_CACHE_DIR that cannot be written
    turns the disk cache off, and the folder's functions still never go to Numba's own
    locators (which would load them by per-file stamps, or another width's)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    eight, sixteen = _probe(dict(env, BPTT_LANES="8")), _probe(dict(env, BPTT_LANES="16"))
    assert eight[0] == sixteen[0] == "True"
    assert eight[1] != sixteen[1] and eight[2] != sixteen[2]
    assert all(p[1].startswith(str(tmp_path / "cache")) and p[2][:16] in p[1] for p in (eight, sixteen))
    (tmp_path / "file").write_text("not a folder")
    stuck = _probe(dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "file" / "cache")))
    assert stuck[0] == "False" and stuck[3] == "_Locator"
    relative = _probe(dict(os.environ, NUMBA_CACHE_DIR="rel"), cwd=tmp_path)  # (kept absolute: a chdir keeps it)
    assert relative[1].startswith(str(tmp_path / "rel") + os.sep)


@pytest.mark.skipif(os.environ.get("BPTT_FAST") == "0", reason="the compiled kernels are off (BPTT_FAST=0)")
def test_warm_says_when_nothing_can_be_cached(tmp_path):
    """bptt warm with a cache folder that cannot be written says so and how to keep the
    kernels (it said they were cached), and still readies them."""
    (tmp_path / "file").write_text("not a folder")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "file" / "cache"), OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "bptt", "warm"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "not cached" in out.stdout and "NUMBA_CACHE_DIR" in out.stdout and "ready in" in out.stdout
    assert "compiling the float32 kernels for this process" in out.stderr


CHILD = r"""
import sys
import numpy as np
from bptt.fast import gemm
gemm.pack_panels(np.ones((3, 5), np.float32), np.empty((1, 3, gemm.PANEL), np.float32))
print(sum(gemm.pack_panels.stats.cache_hits.values()))
"""


@pytest.mark.skipif(os.environ.get("BPTT_FAST") == "0", reason="the compiled kernels are off (BPTT_FAST=0)")
def test_a_change_to_another_file_of_the_folder_compiles_again(tmp_path):
    """A copy of the package: pack_panels (gemm.py) is loaded from the cache in a second
    process, and compiled again after rows.py (whose constant it reads) changed."""
    src = os.path.dirname(os.path.abspath(bptt.__file__))
    shutil.copytree(src, tmp_path / "bptt", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)

    def hits() -> int:
        out = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    assert hits() == 0  # compiled
    assert hits() == 1  # loaded
    with open(tmp_path / "bptt" / "fast" / "rows.py", "a") as f:
        f.write("\n# changed\n")
    assert hits() == 0  # compiled again, not loaded
