"""`python -m bench.sizing`: see bench/sizing/run.py."""

import sys

from bench.sizing.run import main

sys.exit(main())
