"""`python -m kerasbnn ...`: the `kerasbnn` command line (`kerasbnn.cli`)."""

import sys

from kerasbnn.cli import main

sys.exit(main())
