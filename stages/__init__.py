"""One thin module per DVC stage: ``python -m stages.<name>`` reads params, calls the library, writes outs."""
