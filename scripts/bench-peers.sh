#!/usr/bin/env bash
# The peer tools the benchmarks compare Lifeboat with (make bench): installed when missing.
# mydumper/myloader (bench_mysql, bench_system); the others come with make setup
# (mariadb-dump, mariadb-binlog, mariabackup, redis-cli, zstd, tar, bao).
set -euo pipefail
missing=()
command -v mydumper >/dev/null 2>&1 || missing+=(mydumper)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing the peer tools ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "bench: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
