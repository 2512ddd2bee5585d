"""`python -m announcer` is the `announcer` command."""

import sys

from .cli import main

sys.exit(main())
