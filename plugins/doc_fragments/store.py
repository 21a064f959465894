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
'''
