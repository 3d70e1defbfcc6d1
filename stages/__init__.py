"""One thin module per DVC stage: ``python -m stages.<name>`` reads params, calls the library, writes outs.

Importing this package (which ``python -m stages.<name>`` does first) makes idle OpenMP threads sleep
instead of spin-waiting, before any stage imports torch: see ``sparse_cbm.runtime.cpus``."""

import os

from sparse_cbm.runtime.cpus import QUIET_OPENMP

for _name, _value in QUIET_OPENMP.items():
    os.environ.setdefault(_name, _value)
