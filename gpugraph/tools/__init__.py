"""Floor 8, the programs: the ``gpugraph`` command (``cli.py``), the benchmark runner
(``bench.py``) and the offline demo (``demo.py``).

Above the public faces (``gpugraph``, ``gpugraph.distributed``): they use the library as a
user would, and nothing in the library imports them.
"""
