"""``[snapshots]`` of hub.toml: the gateway listener, where stills are kept and for how long."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MAX_BYTES: Final = 2 * 1024 * 1024


class SnapshotSettings(BaseModel):
    """Camera stills: the listener gateways upload to (TLS with client certificates), their files, retention."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen_host: str = Field(default="127.0.0.1", min_length=1, description="the gateway listener's address")
    listen_port: int | None = Field(
        default=None, ge=0, le=65535, description="the gateway listener's port (e.g. 8443); unset: no listener"
    )
    tls_certfile: Path | None = Field(default=None, description="the listener's PEM certificate (the gateways' CA)")
    tls_keyfile: Path | None = Field(default=None, description="its private key")
    client_ca_file: Path | None = Field(
        default=None,
        description="the CA that issued the gateways' certificates; default: the hub's own (secrets_dir/pki/ca.crt)",
    )
    directory: Path = Field(default=Path("storegate-hub-snapshots"), description="where the stills' files are")
    retention_days: float = Field(default=30.0, gt=0, le=3650, description="a still is deleted this long after")
    max_bytes: int = Field(
        default=DEFAULT_MAX_BYTES, ge=1024, le=64 * 1024 * 1024, description="the largest still accepted"
    )
    max_pixels: int = Field(
        default=50_000_000, ge=1, description="the most pixels a still may declare (a small file can claim a lot)"
    )
    purge_interval_s: float = Field(default=3600.0, gt=0, le=86_400, description="how often expired stills go")

    @model_validator(mode="after")
    def _listener_needs_its_certificate(self) -> SnapshotSettings:
        if self.listen_port is not None and (self.tls_certfile is None or self.tls_keyfile is None):
            raise ValueError(
                "snapshots.listen_port needs snapshots.tls_certfile and snapshots.tls_keyfile: gateways upload over "
                "TLS with their client certificates only"
            )
        return self
