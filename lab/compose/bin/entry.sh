#!/bin/sh
# Entrypoint of the compose lab's services: entry.sh mysql|redis|vault|app.
# Secrets come from /run/secrets (Compose secrets); none is ever put in argv.
set -eu
case "$1" in
mysql)
    chown mysql:mysql /var/lib/mysql
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql \
            --auth-root-authentication-method=socket --skip-test-db >/dev/null
    fi
    install -d -o mysql -g mysql /run/mysqld
    # the accounts' SQL (passwords) is re-applied on every start; mariadbd reads it as mysql
    install -m 0600 -o mysql -g mysql /run/secrets/mysql_init /dev/shm/lifeboat-init.sql
    exec mariadbd --user=mysql --port="$LAB_PORT" --init-file=/dev/shm/lifeboat-init.sql
    ;;
redis)
    exec redis-server /run/secrets/redis_conf --port "$LAB_PORT"
    ;;
vault)
    mkdir -p /bao/raft
    exec bao server -config=/opt/lifeboat/bao.hcl
    ;;
app)
    mkdir -p /srv/app/storage /srv/app/logs
    exec python3 /opt/lifeboat/demoapp/app.py --config=/opt/lifeboat/app.json
    ;;
*)
    echo "entry.sh: unknown service '$1' (mysql, redis, vault or app)" >&2
    exit 2
    ;;
esac
