"""Memory-budgeted BPTT against full BPTT, sqrt(T) segments and PyTorch (full and
torch.utils.checkpoint): the same as `bptt bench --budget` (all its flags).

pip install ".[bench]"          # torch 2.13.0 (CPU), the peer
python benchmarks/budget.py --json budget.json --markdown budget.md --plot docs/budget.png
"""

import sys

from bptt.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--budget", *sys.argv[1:]]))
