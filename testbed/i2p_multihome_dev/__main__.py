"""`python -m i2p_multihome_dev`: the same as the `i2p-multihome-dev` command."""

import sys

from i2p_multihome_dev.cli import main

sys.exit(main())
