"""`python -m sfcrime ...`: see `sfcrime/cli.py`."""

import sys

from .cli import main

sys.exit(main())
