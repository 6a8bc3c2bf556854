"""`python -m vigild.daemon.service`: the same program as the `vigild` console script."""

import sys

from vigild.daemon.service.main import main

sys.exit(main())
