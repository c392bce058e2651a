"""The ``[auth]`` section of the TOML file.

::

    [auth]
    stream_token_ttl_s = 900

    [[auth.keys]]                 # printed by `tokenwire keys new --tenant acme --name ci`
    tenant = "acme"
    hash = "sha256:…"             # 64 hex digits: the hash, never the key
    name = "ci"

No keys: auth is off, which is only allowed on a loopback address (see :mod:`.bind`). Build
the request-time side with :class:`tokenwire.auth.Authenticator`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .keys import TENANT_PATTERN, check_hash


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeyEntry(_Section):
    """One API key: the tenant it opens and the hash of the key (never the key itself)."""

    tenant: str = Field(
        pattern=TENANT_PATTERN, description="streams made with this key belong to this tenant"
    )
    hash: str = Field(description="sha256:<64 hex> of the key, from `tokenwire keys new`")
    name: str | None = Field(
        default=None, max_length=200, description="a label for logs, e.g. which client has it"
    )

    @field_validator("hash")
    @classmethod
    def _valid_hash(cls, value: str) -> str:
        return check_hash(value)


class AuthSettings(_Section):
    """The ``[auth]`` section: API keys (each one a tenant) and browser stream tokens."""

    keys: list[ApiKeyEntry] = Field(
        default_factory=list,
        description="several keys may share a tenant (rotation); none: auth off (loopback only)",
    )
    stream_token_ttl_s: float = Field(
        default=900.0,
        gt=0,
        description="how long the token in a POST response opens that stream's events and status",
    )
    token_secret_env: str | None = Field(
        default="TOKENWIRE_TOKEN_SECRET",
        description=(
            "env var holding the secret that signs stream tokens (at least 32 characters). "
            "Unset or empty: a random secret per process, so tokens die with a restart and one "
            "gateway's tokens fail on another: several gateways behind one address must share it"
        ),
    )
    allow_insecure_bind: bool = Field(
        default=False,
        description=(
            "DANGEROUS: serve a non-loopback address with no keys, so anyone who reaches it can "
            "read and cancel every stream. Only for a proxy in front that authenticates"
        ),
    )
