# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Doc fragment ``lifeboat.dr.store``: options of ``common.store_argument_spec()``."""


class ModuleDocFragment:
    """Documents the backup store, key-encryption-key and compression options."""

    DOCUMENTATION = r'''
options:
  store:
    description:
      - Path of the backup store on the managed host. Each published backup set is a
        folder C(<store>/<set_id>) holding a C(backup_manifest.json).
    type: path
    required: true
  key_file:
    description:
      - Path of the primary key-encryption key (KEK) file, 32 random bytes with mode
        C(0600) or C(0400). It wraps the per-set data key; it never leaves the host.
      - One of O(key_file) or O(transit_url) is needed to write or read encrypted data.
    type: path
  escrow_key_file:
    description:
      - Path of a second KEK file (same format as O(key_file)) that also wraps each
        data key, so sets stay readable when the primary key is lost.
    type: path
  transit_url:
    description:
      - URL of a Vault/OpenBao server whose transit engine wraps the data key instead
        of (or in addition to) O(key_file). The KEK never leaves that server.
    type: str
  transit_token:
    description:
      - Token for the transit engine at O(transit_url).
    type: str
  transit_mount:
    description:
      - Mount point of the transit secrets engine.
    type: str
    default: transit
  transit_key:
    description:
      - Name of the transit key used to wrap data keys.
    type: str
  compression:
    description:
      - Compression applied to artifacts before encryption.
    type: str
    default: zstd
    choices: [zstd, gzip, none]
  compression_level:
    description:
      - Compression level; when unset, 3 for C(zstd) and 6 for C(gzip).
    type: int
  compression_threads:
    description:
      - Worker threads for C(zstd) (ignored for C(gzip) and C(none)). V(0) uses zstd's streaming
        compressor in the pipeline's own thread; V(N) gives each artifact N zstd worker threads,
        which compress whole 1 MiB jobs.
      - When unset (automatic), each artifact gets one worker (10-25% less CPU than V(0) at the
        same level, about 8 MB more memory per artifact being written), and the files (app)
        backup's one tar stream per folder gets two on a host with 2 or more CPUs, so that its
        compression uses the second core. See C(docs/performance.md).
    type: int
  run_owner:
    description:
      - Identity of the controller process that drives this run, so that a backup set it leaves
        open when it dies (kill -9, cancelled AWX job, OOM, reboot) blocks no later backup. The
        playbooks pass C(lifeboat_run_owner), computed once per play on the controller by the
        lookup C(lifeboat.dr.run_owner).
      - Keys C(host) (host name), C(pid) (of the C(ansible-playbook) process, not of the
        module), C(start_ticks) (its start time, field 22 of C(/proc/<pid>/stat)), C(boot_id)
        (C(/proc/sys/kernel/random/boot_id)) and optionally C(pid_ns) (its pid namespace).
      - Recorded with the lease of a set opened by M(lifeboat.dr.backup_set). On the
        controller's own host a dead owner ends that lease at once; elsewhere the lease lasts 5
        minutes, renewed by every step. No secrets.
      - Long runs (component backups and restores, binary-log archiving, PITR, verification)
        with O(progress_interval_s) above 0 watch it too - a run whose controller is provably
        gone stops itself (and its child processes) within 5 seconds, so a killed
        C(ansible-playbook) never leaves an C(async) backup running that holds the store's locks.
    type: dict
  progress_id:
    description:
      - Name of this run's status file C(<store>/progress/<progress_id>.json) (reduced to
        letters, digits, C(.), C(_) and C(-)). The roles pass one that their polling task
        (M(lifeboat.dr.run_progress)) reads back. Default C(<host>-<component>-<kind>-<pid>).
      - Only long runs (component backups and restores, binary-log archiving, PITR,
        verification) keep a status file; other modules ignore it.
    type: str
  progress_interval_s:
    description:
      - While a long run works, its status file (bytes done and total, rate, ETA, current
        step, rows or events where known, run owner, pid, start and update times - never a
        secret) is replaced atomically at most every half of this many seconds, and at least
        every this many seconds as a heartbeat; it is removed when the run ends.
        C(lifeboat jobs --running) and the health report read it.
      - V(0) keeps no status file.
    type: float
    default: 15.0
'''
