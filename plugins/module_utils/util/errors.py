# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception hierarchy of Lifeboat.

Every failure that a user can act on is a :class:`LifeboatError`. It carries a
message that names the problem and, where one exists, a ``hint`` naming the fix.
Modules turn it into ``fail_json(msg=...)`` in exactly one place
(:func:`ansible_collections.lifeboat.dr.plugins.module_utils.edge.common.run_module`),
the CLI into an exit code. Messages never contain secrets (keys, passwords, tokens).

``retryable`` marks connection-level failures (refused/reset connection, timeout)
that callers may retry with backoff; data errors (checksum mismatch, SQL error,
bad key) are never retryable.
"""

from __future__ import annotations


class LifeboatError(Exception):
    """Base of all Lifeboat errors: ``str(err)`` is the message plus the hint."""

    retryable = False

    def __init__(self, message: str, hint: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} -- {self.hint}"
        return self.message


class ConfigError(LifeboatError):
    """Bad input or configuration: a missing/invalid option, path or variable."""


class DependencyMissing(LifeboatError):
    """A Python library or an external program Lifeboat needs is not installed."""


class ConnectionFailure(LifeboatError):
    """A service could not be reached (refused, reset, timed out). Retryable."""

    retryable = True


class AuthenticationFailed(LifeboatError):
    """A service refused the credentials given (wrong password, token, ACL)."""


class PermissionDenied(LifeboatError):
    """The account lacks a privilege (the message names it) or a file is unreadable."""


class KeyProblem(LifeboatError):
    """Base for key handling errors."""


class KeyUnavailable(KeyProblem):
    """No key able to unwrap the data key was given (missing key file, wrong key id)."""


class WrongKey(KeyProblem):
    """A key was given but it does not unwrap/authenticate the data."""


class InsecureKeyFile(KeyProblem):
    """A key file has the wrong size or too-open permissions."""


class IntegrityError(LifeboatError):
    """Stored data fails authentication or hashing: tampered, truncated, reordered."""


class TruncatedData(IntegrityError):
    """The data ends before its final, authenticated chunk."""


class TamperedData(IntegrityError):
    """A chunk fails authentication, or a hash/size differs from the manifest."""


class ReorderedData(IntegrityError):
    """Chunks are out of order, duplicated or moved from another artifact or set."""


class FormatError(LifeboatError):
    """Data is not in a format this version of Lifeboat reads (bad magic, unknown version)."""


class UnknownFormatVersion(FormatError):
    """A manifest or artifact declares a ``format_version`` this version cannot read."""


class IncompleteBackup(LifeboatError):
    """A backup set lacks a complete, parseable manifest (e.g. a killed run's .partial)."""


class NotFound(LifeboatError):
    """A named backup set, artifact, record or path does not exist."""


class LockHeld(LifeboatError):
    """Another writer of the same kind holds the lock; the message names the holder."""


class InsufficientSpace(LifeboatError):
    """The free space check failed; the message gives needed and available bytes."""


class BackupFailed(LifeboatError):
    """A backup could not be completed (source tool failed, stream broke)."""


class RestoreFailed(LifeboatError):
    """A restore could not be completed; live data was left as it was or rolled back."""


class VerificationFailed(LifeboatError):
    """A verification found a difference; the message names the artifact or object."""


class RecoveryTargetInvalid(LifeboatError):
    """A point-in-time target is impossible: before the oldest base, in a gap, in the future."""


class GapInArchive(LifeboatError):
    """A binary log is missing from the archive sequence (e.g. purged before archiving)."""


class ServiceControlFailed(LifeboatError):
    """A start/stop/restart/status command of a service manager (or a command run where the
    service lives) failed: non-zero exit or timeout."""


class RedisCommandError(LifeboatError):
    """Redis answered a command with an error reply (the message quotes it)."""
