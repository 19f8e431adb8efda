"""``python -m repinterp.cli``."""
import sys

from . import main

sys.exit(main())
