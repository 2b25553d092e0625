"""`python -m hub` is the same as the `carehub` command."""

import sys

from hub.cli import main

sys.exit(main())
