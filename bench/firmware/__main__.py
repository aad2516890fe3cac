"""`python -m bench.firmware`: blocks served per second (bench/firmware/blocks.py), or
`python -m bench.firmware campaign ...`: a whole campaign (bench/firmware/campaign.py)."""

import sys

if sys.argv[1:2] == ["campaign"]:
    from bench.firmware.campaign import main

    sys.exit(main(sys.argv[2:]))

from bench.firmware.blocks import main

sys.exit(main())
