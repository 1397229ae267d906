"""Settings shared by every process that opens the feature store (env prefix SKEWLESS_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The embedded MLflow default, shared by training and serving so `make train` then
# `make serve` meet in the same registry without any configuration.
DEFAULT_MLFLOW_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"


class FeastSettings(BaseSettings):
    """Where the Feast repo, its registry, its Parquet sources and its Redis live."""

    model_config = SettingsConfigDict(env_prefix="SKEWLESS_", extra="ignore")

    repo_path: Path = Field(PROJECT_ROOT / "feature_repo", description="Folder with feature_store.yaml.")
    data_dir: Path = Field(PROJECT_ROOT / "data", description="Folder with the Parquet source tables.")
    feast_registry: str = Field(
        str(PROJECT_ROOT / "data" / "registry.db"),
        description="Feast registry: a file path, or a SQL URL for the SQL registry.",
    )
    redis_connection: str = Field(
        "127.0.0.1:6379",
        description="Feast Redis connection string, host:port[,db=0][,ssl=true][,username=...].",
    )
    redis_password: SecretStr | None = Field(None, description="Redis password; never logged.")
    redis_password_file: Path | None = Field(None, description="File holding the Redis password.")
    redis_socket_timeout: float = Field(5.0, gt=0, le=300, description="Seconds before a Redis call fails.")
    materialize_chunk_rows: int = Field(
        20_000, ge=1, le=1_000_000, description="Entities per Redis pipeline when materializing (bounds memory)."
    )

    @field_validator("redis_connection")
    @classmethod
    def _no_inline_password(cls, v: str) -> str:
        if "password=" in v:
            raise ValueError("put the Redis password in SKEWLESS_REDIS_PASSWORD(_FILE), not the connection string")
        host = v.split(",", 1)[0]
        if ":" not in host or not host.rsplit(":", 1)[1].isdigit():
            raise ValueError(f"expected host:port[,options], got {host!r}")
        return v

    def password(self) -> str | None:
        """The Redis password from the env var or the secret file."""
        if self.redis_password is not None:
            return self.redis_password.get_secret_value()
        if self.redis_password_file is not None:
            return self.redis_password_file.read_text().strip()
        return None

    def feast_connection_string(self, socket_timeout: float | None = None) -> str:
        """The full Feast connection string, with timeouts and the secret added."""
        timeout = socket_timeout if socket_timeout is not None else self.redis_socket_timeout
        parts = [
            p
            for p in self.redis_connection.split(",")
            if not p.startswith(("socket_timeout=", "socket_connect_timeout="))
        ]
        parts += [f"socket_timeout={timeout}", f"socket_connect_timeout={min(timeout, 2.0)}"]
        pw = self.password()
        if pw:
            parts.append(f"password={pw}")
        return ",".join(parts)


@lru_cache
def get_feast_settings() -> FeastSettings:
    """Cached settings; tests call ``get_feast_settings.cache_clear()`` after changing env."""
    return FeastSettings()
