"""`python -m bench.ingest`: see bench/ingest/run.py."""

import sys

from bench.ingest.run import main

sys.exit(main())
