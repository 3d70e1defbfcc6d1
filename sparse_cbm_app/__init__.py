"""The application built on the ``sparse_cbm`` library: the typed schema of ``params.yaml``
(``params``), the ``sparse-cbm`` command (``cli``) and the adapter from ``concepts.*`` params to
the library's concept sources (``concept_sources``). The library never imports this package; the
stages and the command do (as ``open_clip_train`` stands apart from ``open_clip``)."""
