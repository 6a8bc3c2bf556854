"""`python -m vigild.daemon.cli`: the same program as the `vigil` console script."""

import sys

from vigild.daemon.cli.main import main

sys.exit(main())
