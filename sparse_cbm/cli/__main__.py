import sys

from sparse_cbm.cli.main import main

sys.exit(main())
