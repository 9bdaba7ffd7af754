"""The training-step benchmark against PyTorch and JAX: the same as `bptt bench` (all its flags).

pip install ".[bench]"          # torch 2.13.0 (CPU) and JAX, the peers
python benchmarks/bench.py --json bench.json --markdown bench.md
"""

import sys

from bptt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
