import sys

from bench.dimming.run import main

sys.exit(main())
