"""`python -m cp_dist.cli`: the cp-dist command, for scripts that run it under a given interpreter."""

from cp_dist.cli import main

main()
