import sys

from sparse_cbm_app.cli.main import main

sys.exit(main())
