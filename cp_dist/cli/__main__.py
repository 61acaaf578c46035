"""`python -m cp_dist.cli`: the cp-dist command, for scripts that run it under a given interpreter."""

import sys

from cp_dist.cli import main

sys.exit(main())
