"""`python -m bench.firmware`: see bench/firmware/blocks.py."""

import sys

from bench.firmware.blocks import main

sys.exit(main())
