"""What the lifespan builds once per process and every request shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keeps `import serving.app` light; the lifespan imports the heavy parts
    import redis.asyncio as aioredis
    from feast import FeatureStore

    from feature_repo.settings import FeastSettings
    from serving.features import OnlineFeatures
    from serving.metrics import Metrics
    from serving.model import ModelHolder
    from serving.reload import Reloader
    from serving.settings import ServingSettings

Clock = Callable[[], float]  # epoch seconds; injectable so tests can move time


@dataclass
class AppState:
    """Kept on ``app.state.skewless``; dependencies hand out its parts."""

    settings: ServingSettings
    feast_settings: FeastSettings
    store: FeatureStore
    online: OnlineFeatures
    holder: ModelHolder
    reloader: Reloader
    metrics: Metrics
    ping: aioredis.Redis
    clock: Clock
