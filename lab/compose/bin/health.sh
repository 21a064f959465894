#!/bin/sh
# Healthchecks of the compose lab's services: health.sh redis|vault|app (exit 0 = healthy).
set -eu
case "$1" in
redis)
    REDISCLI_AUTH=$(cat /run/secrets/redis_password) redis-cli -p "$LAB_PORT" ping | grep -q PONG
    ;;
vault)
    bao status -address="http://127.0.0.1:$LAB_PORT" >/dev/null
    ;;
app)
    python3 -c "import sys, urllib.request
sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$LAB_PORT/health', timeout=4).status == 200 else 1)"
    ;;
*)
    exit 2
    ;;
esac
