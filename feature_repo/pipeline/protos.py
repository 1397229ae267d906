"""Feast's generated protobuf classes, loaded without the rest of Feast.

``import feast`` runs Feast's ``__init__``, which imports every data source, the feature
server, SQLAlchemy and pandas: about 1.8 s of CPU, most of a materialization's start-up. The
registry file and the Redis values are plain Feast protobufs, and the generated ``*_pb2``
modules need only ``google.protobuf``. So the package is stood in for by an empty module with
Feast's path while they load, then every ``feast*`` entry is dropped from ``sys.modules``: a
later ``import feast`` runs Feast's own ``__init__`` in full (the protobuf runtime accepts the
same descriptors registered twice and hands back the same message classes).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def _feast_package_skipped() -> Iterator[None]:
    if "feast" in sys.modules:  # Feast is loaded already: the imports are plain ones
        yield
        return
    spec = importlib.util.find_spec("feast")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("feast is not installed", name="feast")
    stand_in = types.ModuleType("feast")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["feast"] = stand_in
    try:
        yield
    finally:
        for name in [m for m in sys.modules if m == "feast" or m.startswith("feast.")]:
            del sys.modules[name]


with _feast_package_skipped():
    from feast.protos.feast.core.FeatureView_pb2 import AVAILABLE_ONLINE, STATE_UNSPECIFIED, MaterializationInterval
    from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

__all__ = [
    "AVAILABLE_ONLINE",
    "STATE_UNSPECIFIED",
    "FeatureViewProto",
    "MaterializationInterval",
    "RegistryProto",
    "ValueProto",
]
