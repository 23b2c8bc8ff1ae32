"""`python -m textvision`: the same command line as the `textvision` script."""

import sys

from textvision.cli import main

sys.exit(main())
