"""The online prediction API."""

import os
import sys

# Importing Feast's metrics module sets PROMETHEUS_MULTIPROC_DIR for the whole process (and for
# every process started from one that imported Feast), and prometheus_client then keeps every
# value in an mmap'd file behind a lock: ~12 µs per increment, a dozen increments a request.
# prometheus_client chooses its value class when first imported, so, unless something imported
# it already (then it must keep its directory), the variable is dropped and the class chosen
# here, before anything in the package imports Feast. The API never used the multiprocess
# collector: each process exports its own registry on /metrics.
if "prometheus_client.values" not in sys.modules:
    for _var in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(_var, None)
    import prometheus_client.values  # noqa: F401  # for the import's side effect, see above
