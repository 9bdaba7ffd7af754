"""`python -m bptt ...`: the command line (bptt.cli), as `mpirun -n 2 python -m bptt train ...` runs it."""

import sys

from .cli import main

sys.exit(main())
