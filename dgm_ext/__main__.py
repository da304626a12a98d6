"""``python -m dgm_ext``: the ``dgm-ext`` command line."""

import sys

from dgm_ext.cli import main

sys.exit(main())
