"""`python -m gpugraph ...` runs the command line, as `gpugraph ...` does (and as
`torchrun -m gpugraph ...` needs)."""

import sys

from gpugraph.tools.cli import main

sys.exit(main())
