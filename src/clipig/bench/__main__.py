"""`python -m clipig.bench` is `clipig bench`."""

import sys

from .speed import main

sys.exit(main())
