"""The ``sparse-cbm`` command: applications built on the library (profiles, the
reproducibility check, training the shapes CLIP)."""
