"""Benchmarks of sketchcore: one script per topic (``python -m bench.<topic>``) over the shared
harness in ``bench.common``; results land in ``bench/results/<topic>.md`` and ``.png``."""
