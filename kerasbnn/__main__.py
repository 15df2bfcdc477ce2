"""`python -m kerasbnn ...`: the `kerasbnn` command line (`kerasbnn.cli`)."""

import sys

from kerasbnn.cli import main

if __name__ == "__main__":  # importing the module (docs, module walks) runs nothing
    sys.exit(main())
