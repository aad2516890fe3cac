"""`python -m bench.alarms [throughput|latency]`: see bench/alarms/throughput.py and latency.py."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "latency":
    from bench.alarms.latency import main
    del sys.argv[1]
else:
    from bench.alarms.throughput import main
    if len(sys.argv) > 1 and sys.argv[1] == "throughput":
        del sys.argv[1]

sys.exit(main())
