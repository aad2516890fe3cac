"""`python -m bench.storm`: see bench/storm/run.py."""

import sys

from bench.storm.run import main

sys.exit(main())
