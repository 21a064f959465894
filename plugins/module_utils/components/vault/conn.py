# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection layer for Vault/OpenBao (options of ``common.vault_argument_spec``).

:func:`connect` builds an authenticated :class:`VaultConnection` (token or AppRole,
TLS CA / verify, namespace) over hvac. The token travels only in request headers:
never in argv, logs, results or error messages. hvac and requests errors are
mapped onto :mod:`errors` classes whose messages name the endpoint and the fix.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailure,
    DependencyMissing,
    InsecureKeyFile,
    LifeboatError,
    NotFound,
    PermissionDenied,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

try:
    import hvac
    import hvac.exceptions as hvac_exc
    import requests

    HAS_HVAC = True
except ImportError:  # pragma: no cover - only in the sanity import test
    hvac = None
    hvac_exc = None
    requests = None
    HAS_HVAC = False

log = get_logger("vault")

TOKEN_ENV_VARS = ("VAULT_TOKEN", "BAO_TOKEN")


def require_hvac() -> None:
    """Raise :class:`DependencyMissing` when hvac is not importable."""
    if not HAS_HVAC:
        raise DependencyMissing("the Python library 'hvac' is needed to talk to Vault/OpenBao",
                                hint="pip install hvac (see requirements.txt) on the managed host")


@dataclass(frozen=True)
class VaultOptions:
    """How to reach and authenticate to a Vault/OpenBao server (no defaults hidden elsewhere)."""

    url: str
    auth_method: str = "token"
    token: Optional[str] = None
    role_id: Optional[str] = None
    secret_id: Optional[str] = None
    namespace: Optional[str] = None
    ca_cert: Optional[str] = None
    validate_certs: bool = True
    timeout: int = 30

    def __repr__(self) -> str:  # never show the token / secret id
        return f"VaultOptions(url={self.url!r}, auth_method={self.auth_method!r}, namespace={self.namespace!r})"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> VaultOptions:
        """Build from module parameters of ``vault_argument_spec()`` (extra keys ignored)."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: params[k] for k in names if params.get(k) is not None})

    def verify(self) -> Any:
        """The ``verify`` argument for requests: CA file path, True or False."""
        if not self.validate_certs:
            return False
        return self.ca_cert or True


def _map_error(err: Exception, what: str, url: str) -> LifeboatError:
    """Translate an hvac/requests exception into a Lifeboat error (no secrets in it)."""
    if HAS_HVAC:
        if isinstance(err, requests.exceptions.SSLError):
            return ConnectionFailure(f"{what}: TLS verification of {url} failed",
                                     hint="give the CA certificate with ca_cert, or fix the server certificate")
        if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return ConnectionFailure(f"{what}: cannot reach {url} ({type(err).__name__})",
                                     hint="check url, that the server runs and listens, and firewalls")
        if isinstance(err, hvac_exc.Unauthorized):
            return AuthenticationFailed(f"{what}: {url} refused the credentials",
                                        hint="check token / role_id+secret_id (expired or revoked?)")
        if isinstance(err, hvac_exc.Forbidden):
            return PermissionDenied(f"{what}: permission denied by {url}",
                                    hint="the token's policy must allow this path (see docs/vault.md)")
        if isinstance(err, hvac_exc.VaultDown):
            return ConnectionFailure(f"{what}: {url} is sealed or not ready",
                                     hint="unseal the server (bao operator unseal) and retry")
        if isinstance(err, hvac_exc.InvalidPath):
            return NotFound(f"{what}: path not found on {url}")
        if isinstance(err, hvac_exc.VaultError):
            detail = "; ".join(str(e) for e in (getattr(err, "errors", None) or [])) or type(err).__name__
            return ConnectionFailure(f"{what}: {url} answered with an error: {detail[:300]}")
    return ConnectionFailure(f"{what}: {type(err).__name__} talking to {url}")


class VaultConnection:
    """An authenticated hvac client plus the few raw calls Lifeboat needs."""

    def __init__(self, options: VaultOptions, client: Any) -> None:
        self.options = options
        self.client = client

    @property
    def url(self) -> str:
        return self.options.url

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)``, mapping failures to Lifeboat errors naming ``what``."""
        try:
            return fn(*args, **kwargs)
        except LifeboatError:
            raise
        except Exception as err:  # noqa: BLE001 - mapped, never hidden
            raise _map_error(err, what, self.url) from err

    # -- unauthenticated status
    def seal_status(self) -> dict[str, Any]:
        """``sys/seal-status`` (works sealed and unauthenticated)."""
        return self.raw("GET", "/v1/sys/seal-status", "read seal status", expect_json=True, auth=False)

    def health(self) -> dict[str, Any]:
        """``sys/health`` with every state answering 200 (so a sealed server is not an exception)."""
        return self.raw("GET", "/v1/sys/health?standbyok=true&sealedcode=200&uninitcode=200&perfstandbyok=true",
                        "read health", expect_json=True, auth=False)

    def raw(self, method: str, path: str, what: str, *, expect_json: bool = False, auth: bool = True,
            data: Any = None, stream: bool = False, ok: tuple[int, ...] = (200, 204)) -> Any:
        """One HTTP request with the client's session, TLS and namespace settings.

        Returns parsed JSON (``expect_json``), else the :class:`requests.Response`.
        """
        require_hvac()
        headers = {}
        if auth and self.client.token:
            headers["X-Vault-Token"] = self.client.token
        if self.options.namespace:
            headers["X-Vault-Namespace"] = self.options.namespace
        try:
            resp = self.client.adapter.session.request(
                method, self.url.rstrip("/") + path, headers=headers, data=data, stream=stream,
                verify=self.options.verify(), timeout=self.options.timeout)
        except Exception as err:  # noqa: BLE001
            raise _map_error(err, what, self.url) from err
        if resp.status_code not in ok:
            raise self._http_error(resp, what)
        if expect_json:
            return resp.json() if resp.content else {}
        return resp

    def _http_error(self, resp: Any, what: str) -> LifeboatError:
        try:
            errors = "; ".join(resp.json().get("errors") or [])
        except ValueError:
            errors = resp.text[:200]
        code = resp.status_code
        if code in (401, 403):
            return PermissionDenied(f"{what}: {self.url} answered {code} ({errors or 'permission denied'})",
                                    hint="the token must be valid and its policy allow this path "
                                         "(see docs/vault.md for the policy)")
        if code == 503:
            return ConnectionFailure(f"{what}: {self.url} is sealed or standby ({errors})",
                                     hint="unseal it, or point url at the active node")
        if code == 404:
            return NotFound(f"{what}: {self.url} answered 404 ({errors})")
        return ConnectionFailure(f"{what}: {self.url} answered {code} ({errors[:300]})")

    def iter_raw(self, path: str, what: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the body of an authenticated GET in pieces of at most ``chunk_size`` bytes."""
        resp = self.raw("GET", path, what, stream=True)
        with resp:
            try:
                yield from resp.iter_content(chunk_size)
            except Exception as err:  # noqa: BLE001
                raise _map_error(err, what, self.url) from err

    def post_stream(self, path: str, body: BinaryIO, what: str) -> Any:
        """POST a file object as the request body (streamed, not loaded into memory)."""
        return self.raw("POST", path, what, data=body)

    def token_valid(self) -> bool:
        """True when the connection's token is accepted (``auth/token/lookup-self``)."""
        try:
            self.raw("GET", "/v1/auth/token/lookup-self", "look up token")
            return True
        except (PermissionDenied, NotFound):
            return False


def connect(options: VaultOptions, *, login: bool = True) -> VaultConnection:
    """Create a client for ``options`` and authenticate (token, or AppRole login).

    The token may also come from ``VAULT_TOKEN``/``BAO_TOKEN`` in the environment.
    Raises :class:`ConfigError` for missing credentials, :class:`AuthenticationFailed`
    when the AppRole login is refused.
    """
    require_hvac()
    if not options.url:
        raise ConfigError("vault: url is required", hint="set url, e.g. https://vault.example.com:8200")
    client = hvac.Client(url=options.url, namespace=options.namespace, verify=options.verify(),
                         timeout=options.timeout)
    conn = VaultConnection(options, client)
    if not login:
        return conn
    if options.auth_method == "approle":
        if not (options.role_id and options.secret_id):
            raise ConfigError("vault: auth_method approle needs role_id and secret_id",
                              hint="set both, or use auth_method: token")
        conn.call("AppRole login", client.auth.approle.login, role_id=options.role_id,
                  secret_id=options.secret_id)
    elif options.auth_method == "token":
        token = options.token or next((os.environ[v] for v in TOKEN_ENV_VARS if os.environ.get(v)), None)
        if not token:
            raise ConfigError("vault: no token given",
                              hint="set token (no_log), or VAULT_TOKEN in the environment, or use approle")
        client.token = token
    else:
        raise ConfigError(f"vault: unknown auth_method {options.auth_method!r}", hint="use token or approle")
    return conn


def connect_params(params: dict[str, Any], *, login: bool = True) -> VaultConnection:
    """:func:`connect` from module parameters of ``vault_argument_spec()``."""
    return connect(VaultOptions.from_params(params), login=login)


def read_unseal_keys(path: str | Path) -> list[str]:
    """Unseal key shares from an escrowed keys file.

    Accepts the JSON printed by ``bao operator init -format=json`` / the init API
    (``unseal_keys_b64`` / ``keys_base64`` / ``keys``) or a plain list of keys.
    The file must be mode 0600 or 0400 (:class:`InsecureKeyFile` otherwise).
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NotFound(f"unseal keys file {path} does not exist",
                       hint="give the escrowed keys file (the JSON from operator init)") from None
    if st.st_mode & 0o077:
        raise InsecureKeyFile(f"unseal keys file {path} is readable by group/others (mode {st.st_mode & 0o777:o})",
                              hint=f"chmod 600 {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ConfigError(f"unseal keys file {path} is not JSON",
                          hint="use the JSON from 'bao operator init -format=json'") from err
    if isinstance(doc, dict):
        for field in ("unseal_keys_b64", "keys_base64", "unseal_keys_hex", "keys"):
            if isinstance(doc.get(field), list) and doc[field]:
                return [str(k) for k in doc[field]]
    elif isinstance(doc, list) and doc:
        return [str(k) for k in doc]
    raise ConfigError(f"unseal keys file {path} holds no unseal keys",
                      hint="expected keys_base64 / unseal_keys_b64 / keys as in the operator init output")


def unseal(conn: VaultConnection, keys: list[str], *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Submit key shares until the server is unsealed; return the final seal status.

    Raises :class:`AuthenticationFailed` when all shares were submitted and it is still
    sealed (the keys belong to another cluster / another point in time).
    """
    status = conn.seal_status()
    if not status.get("sealed"):
        return status
    conn.raw("PUT", "/v1/sys/unseal", "reset unseal", data=json.dumps({"reset": True}), auth=False)
    for key in keys:
        status = conn.raw("PUT", "/v1/sys/unseal", "unseal", data=json.dumps({"key": key}),
                          expect_json=True, auth=False, ok=(200, 204, 400))
        if status.get("errors"):
            raise AuthenticationFailed(f"unseal of {conn.url} refused a key share ({'; '.join(status['errors'])})",
                                       hint="the unseal keys file must be the one of the cluster the snapshot "
                                            "came from")
        if not status.get("sealed", True):
            break
    if status.get("sealed", True):
        raise AuthenticationFailed(f"{conn.url} is still sealed after submitting {len(keys)} key share(s)",
                                   hint="use the unseal keys of the cluster the snapshot came from")
    return wait_ready(conn, timeout_s=timeout_s)


def wait_ready(conn: VaultConnection, *, timeout_s: float = 30.0, want_active: bool = True) -> dict[str, Any]:
    """Poll ``sys/health`` until initialized, unsealed (and active); return it.

    Raises :class:`ConnectionFailure` after ``timeout_s`` seconds naming the last state seen.
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = conn.health()
            if last.get("initialized") and not last.get("sealed") and (not want_active or not last.get("standby")):
                return last
        except ConnectionFailure as err:
            last = str(err)
        time.sleep(0.25)
    raise ConnectionFailure(f"{conn.url} not ready after {timeout_s:.0f} s (last state: {last})",
                            hint="check the server log; it may need unsealing")
