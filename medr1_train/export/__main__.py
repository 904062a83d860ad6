"""`python -m medr1_train.export ARGS`: the same as `medr1-train export ARGS`."""

import sys

from medr1_train.cli import main

sys.exit(main(["export", *sys.argv[1:]]))
