# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a published backup set (:class:`BackupSet`): its manifest, artifacts and metadata.

Published sets are never modified; opening one loads and validates its manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from ansible_collections.lifeboat.dr.plugins.module_utils.store.manifest import (
    Manifest,
    check_manifest_mac,
    load_manifest,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.store.verification import (
    describe_error,
    pipeline_module,
    verification_report,
    verify_plain_file,
    verify_records,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    IncompleteBackup,
    LifeboatError,
    NotFound,
    TamperedData,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import (
    ProgressFn,
    get_logger,
)

log = get_logger("store.reader")


class BackupSet:
    """A published set, opened read-only. ``manifest`` is validated on open."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self.manifest: Manifest = load_manifest(self.path)
        self.set_id: str = self.manifest["id"]
        self._key_cache: tuple[Any, bytes] | None = None

    @property
    def type(self) -> str:
        """The set type (``full``, ``mysql``, ..., ``binlog``)."""
        return self.manifest["type"]

    @property
    def components(self) -> list[str]:
        """The components the set holds."""
        return list(self.manifest["components"])

    def artifacts(self, component: Optional[str] = None) -> list[dict[str, Any]]:
        """Copies of the artifact records (optionally of one component), in manifest order."""
        return [dict(r) for r in self.manifest["artifacts"] if component in (None, r["component"])]

    def files(self, component: Optional[str] = None) -> list[dict[str, Any]]:
        """Copies of the plaintext JSON file records (optionally of one component)."""
        return [dict(r) for r in self.manifest["files"] if component in (None, r["component"])]

    def component_metadata(self, component: str) -> dict[str, Any]:
        """The free-form metadata an engine stored for ``component`` (``{}`` if none)."""
        return json.loads(json.dumps(self.manifest["component_metadata"].get(component, {})))

    def artifact_record(self, component: str, name: str) -> dict[str, Any]:
        """The record of artifact ``component/name``; :class:`NotFound` if the set has none."""
        for record in self.manifest["artifacts"]:
            if record["component"] == component and record["name"] == name:
                return dict(record)
        have = ", ".join(r["path"] for r in self.manifest["artifacts"]) or "none"
        raise NotFound(f"set {self.set_id} has no artifact {component}/{name} (it has: {have})")

    def data_key(self, keyring: Any) -> bytes:
        """Unwrap the set's data key with ``keyring`` and authenticate the manifest with it.

        Raises :class:`KeyUnavailable` / :class:`WrongKey` (from the keyring) or
        :class:`TamperedData` (manifest modified). Cached per keyring object.
        """
        if self._key_cache and self._key_cache[0] is keyring:
            return self._key_cache[1]
        key = keyring.unwrap(self.manifest["encryption"]["data_key_wraps"])
        check_manifest_mac(self.manifest, key)
        self._key_cache = (keyring, key)
        return key

    def open_artifact(self, component: str, name: str, keyring: Any, progress: Optional[ProgressFn] = None):
        """A binary reader of the artifact's plaintext (authenticated chunk by chunk; the
        size and SHA-256 of the whole are checked against the manifest at EOF)."""
        record = self.artifact_record(component, name)
        src = self.path / record["path"]
        if not src.is_file():
            raise IncompleteBackup(f"set {self.set_id} lacks {record['path']}, which its manifest lists",
                                   hint="the set is damaged; use another set")
        return pipeline_module().open_artifact_reader(src, data_key=self.data_key(keyring), set_id=self.set_id,
                                                      artifact_path=record["path"], record=record, progress=progress)

    def read_json(self, component: str, name: str) -> Any:
        """The parsed JSON file ``component/name``, after checking its size and SHA-256."""
        for record in self.manifest["files"]:
            if record["component"] == component and record["name"] == name:
                error = verify_plain_file(self.path, record)
                if error:
                    raise TamperedData(f"set {self.set_id}: {error}", hint="the set is damaged; use another set")
                return json.loads((self.path / record["path"]).read_text(encoding="utf-8"))
        raise NotFound(f"set {self.set_id} has no JSON file {component}/{name}")

    def quick_verify(self, keyring: Any, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
        """Check every artifact's size and SHA-256 and authenticate every chunk, writing no
        plaintext to disk. Returns ``{ok, set_id, mode: "quick", checked_at, error,
        artifacts: [{path, kind, ok, error}]}``; never raises for a bad artifact or key."""
        key: Optional[bytes] = None
        key_error: Optional[str] = None
        try:
            key = self.data_key(keyring)
        except LifeboatError as err:
            key_error = describe_error(err)
        entries = verify_records(self.path, self.set_id, key, self.manifest["artifacts"], self.manifest["files"],
                                 key_error=key_error, progress=progress)
        return verification_report(self.set_id, "quick", entries, key_error)
