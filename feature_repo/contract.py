"""The model/feature-service contract, computed the same way by training and serving.

A model version records the service name, its ordered feature refs, the entity join
key, the Feast project and a fingerprint of the service's schema. Serving recomputes
the fingerprint from the live registry and refuses the model when it differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from feast import FeatureService, FeatureStore
from feast.on_demand_feature_view import OnDemandFeatureView

TAG_PREFIX = "skewless."


@dataclass(frozen=True)
class Contract:
    """What a model needs from Feast, in the model's column order."""

    feature_service: str
    features: tuple[str, ...]  # Feast refs, "view:feature", in model column order
    entity_key: str
    project: str
    fingerprint: str

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Column names as the model sees them (the part after the colon)."""
        return tuple(ref.split(":", 1)[1] for ref in self.features)

    def to_tags(self) -> dict[str, str]:
        """MLflow model-version tags; values are strings."""
        d = asdict(self)
        d["features"] = json.dumps(list(self.features))
        return {TAG_PREFIX + k: str(v) for k, v in d.items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Contract:
        """Read a contract back from model-version tags; KeyError names what is missing."""
        missing = [
            k
            for k in ("feature_service", "features", "entity_key", "project", "fingerprint")
            if TAG_PREFIX + k not in tags
        ]
        if missing:
            raise KeyError(f"model version has no contract tags: {', '.join(TAG_PREFIX + m for m in missing)}")
        return cls(
            feature_service=tags[TAG_PREFIX + "feature_service"],
            features=tuple(json.loads(tags[TAG_PREFIX + "features"])),
            entity_key=tags[TAG_PREFIX + "entity_key"],
            project=tags[TAG_PREFIX + "project"],
            fingerprint=tags[TAG_PREFIX + "fingerprint"],
        )


def _schema(store: FeatureStore, service: FeatureService) -> tuple[list[str], list[list[str]], set[str]]:
    refs: list[str] = []
    schema: list[list[str]] = []
    join_keys: set[str] = set()
    for proj in service.feature_view_projections:
        view_name = proj.name_to_use()
        view_ttl = ""
        transform = ""
        try:
            fv = store.get_feature_view(proj.name)
            join_keys.update(fv.join_keys)
            view_ttl = str(int(fv.ttl.total_seconds())) if fv.ttl else "0"
        except Exception:
            odfv: OnDemandFeatureView = store.get_on_demand_feature_view(proj.name)
            udf = odfv.feature_transformation
            transform = (getattr(udf, "udf_string", "") or "") if udf is not None else ""
        for f in proj.features:
            refs.append(f"{view_name}:{f.name}")
            schema.append(
                [view_name, f.name, str(f.dtype), view_ttl, hashlib.sha256(transform.encode()).hexdigest()[:16]]
            )
    return refs, schema, join_keys


def contract_for(store: FeatureStore, service_name: str) -> Contract:
    """Build the contract of a feature service from the registry the store points at."""
    service = store.get_feature_service(service_name)
    refs, schema, join_keys = _schema(store, service)
    if len(join_keys) != 1:
        raise ValueError(f"feature service {service_name} spans join keys {sorted(join_keys)}; expected exactly one")
    payload = json.dumps({"service": service_name, "project": store.project, "schema": schema}, sort_keys=True)
    return Contract(
        feature_service=service_name,
        features=tuple(refs),
        entity_key=join_keys.pop(),
        project=store.project,
        fingerprint=hashlib.sha256(payload.encode()).hexdigest(),
    )


def mismatch(store: FeatureStore, contract: Contract) -> str | None:
    """Why the live registry would not serve a model trained on ``contract``, or None if it would.

    The one rule serving (which refuses such a model), the training gate (where such a champion
    stops competing) and rollback (which will not go back to one) share. A service that is gone or
    no longer fits one entity is a reason; any other registry failure propagates, since it says
    nothing about the contract.
    """
    from feast.errors import FeatureServiceNotFoundException

    try:
        live = contract_for(store, contract.feature_service)
    except FeatureServiceNotFoundException:
        return f"feature service {contract.feature_service!r} is not in the registry"
    except ValueError as e:  # the service now spans several join keys
        return str(e)
    if live.project != contract.project:
        return f"model trained on Feast project {contract.project!r}, registry is {live.project!r}"
    if live.fingerprint != contract.fingerprint:
        return (
            f"contract mismatch: feature service {contract.feature_service!r} fingerprint in the registry is "
            f"{live.fingerprint[:12]}, model was trained on {contract.fingerprint[:12]}"
        )
    if live.features != contract.features or live.entity_key != contract.entity_key:
        return "contract mismatch: feature order or entity key differs from the registry"
    return None
