import sys

from bench.routes.run import main

sys.exit(main())
