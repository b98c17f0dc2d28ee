"""`python -m csi_hostpath_selinux` runs the driver's command line."""

import sys

from .cli import main

sys.exit(main())
