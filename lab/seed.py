"""Demo data for the lab: MariaDB schema ``demo``, Redis dbs 0-2, app storage files.

Idempotent and deterministic: row ``i`` always gets the same content (seeded
random streams, ``INSERT IGNORE`` with explicit ids), so seeding twice changes
nothing and a larger ``rows`` only adds rows. MariaDB objects: tables
``customers``, ``products``, ``orders`` (FK to customers, secondary indexes),
``order_items`` (composite PK, FKs), ``audit_log``, the app's ``canary`` and
``files``; view ``customer_order_totals``; triggers ``customers_bi`` and
``orders_au``; procedure ``set_order_status``; function ``order_total_with_tax``;
event ``purge_audit_log`` (the lab runs with ``event_scheduler=OFF``, so data
stays still). Redis keys never touch the app's ``canary`` / ``files:uploaded``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger
from lab import svc_mysql, svc_redis
from lab.demoapp.app import SCHEMA as APP_SCHEMA
from lab.layout import Layout

DEFAULT_ROWS = 2000
DATABASE = "demo"
BASE_TIME = dt.datetime(2024, 1, 1, 0, 0, 0)
NAMES = ["Ada", "Zoë", "Łukasz", "Renée", "李雷", "Olu", "Siobhán", "Jürgen", "Ana", "Mehmet", "Chidi", "Noor"]
COUNTRIES = ["DE", "FR", "GB", "NG", "PL", "TR", "CN", "IE", "BR", "US"]
STATUSES = ["new", "paid", "shipped", "cancelled"]

log = get_logger("lab.seed")

TABLES = (
    """CREATE TABLE IF NOT EXISTS customers (
         id INT UNSIGNED PRIMARY KEY,
         email VARCHAR(190) NOT NULL UNIQUE,
         name VARCHAR(100) NOT NULL,
         country CHAR(2) NOT NULL,
         birth_date DATE NULL,
         balance DECIMAL(12,2) NOT NULL DEFAULT 0,
         rating FLOAT NULL,
         active TINYINT(1) NOT NULL DEFAULT 1,
         created_at DATETIME(6) NOT NULL,
         notes TEXT NULL,
         avatar BLOB NULL,
         profile JSON NULL
       ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS products (
         id INT UNSIGNED PRIMARY KEY,
         sku VARCHAR(32) NOT NULL UNIQUE,
         title VARCHAR(200) NOT NULL,
         price DECIMAL(10,2) NOT NULL
       ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS orders (
         id BIGINT UNSIGNED PRIMARY KEY,
         customer_id INT UNSIGNED NOT NULL,
         status ENUM('new','paid','shipped','cancelled') NOT NULL,
         flags SET('gift','express','fragile') NOT NULL DEFAULT '',
         total DECIMAL(12,2) NOT NULL,
         weight_kg DOUBLE NULL,
         ordered_at DATETIME NOT NULL,
         note VARCHAR(255) NULL,
         KEY idx_orders_customer_status (customer_id, status),
         KEY idx_orders_ordered_at (ordered_at),
         CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
       ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS order_items (
         order_id BIGINT UNSIGNED NOT NULL,
         line_no SMALLINT UNSIGNED NOT NULL,
         product_id INT UNSIGNED NOT NULL,
         qty INT NOT NULL,
         unit_price DECIMAL(10,2) NOT NULL,
         PRIMARY KEY (order_id, line_no),
         CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
         CONSTRAINT fk_items_product FOREIGN KEY (product_id) REFERENCES products (id)
       ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS audit_log (
         id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
         order_id BIGINT UNSIGNED NOT NULL,
         old_status VARCHAR(16) NULL,
         new_status VARCHAR(16) NULL,
         changed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
       ) ENGINE=InnoDB""",
)

ROUTINES = (
    """CREATE OR REPLACE VIEW customer_order_totals AS
         SELECT c.id AS customer_id, c.email, COUNT(o.id) AS orders, COALESCE(SUM(o.total), 0) AS total
         FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.email""",
    """CREATE OR REPLACE TRIGGER customers_bi BEFORE INSERT ON customers FOR EACH ROW
         SET NEW.email = LOWER(NEW.email)""",
    """CREATE OR REPLACE TRIGGER orders_au AFTER UPDATE ON orders FOR EACH ROW
         INSERT INTO audit_log (order_id, old_status, new_status)
         SELECT NEW.id, OLD.status, NEW.status FROM DUAL WHERE NOT (OLD.status <=> NEW.status)""",
    """CREATE OR REPLACE PROCEDURE set_order_status(IN p_order BIGINT UNSIGNED, IN p_status VARCHAR(16))
         MODIFIES SQL DATA
         UPDATE orders SET status = p_status WHERE id = p_order""",
    """CREATE OR REPLACE FUNCTION order_total_with_tax(p_total DECIMAL(12,2), p_rate DECIMAL(5,4))
         RETURNS DECIMAL(12,2) DETERMINISTIC NO SQL
         RETURN ROUND(p_total * (1 + p_rate), 2)""",
    """CREATE OR REPLACE EVENT purge_audit_log ON SCHEDULE EVERY 1 DAY STARTS '2024-01-01 03:00:00'
         DO DELETE FROM audit_log WHERE changed_at < NOW() - INTERVAL 365 DAY""",
)


def demo_schema_exists(layout: Layout) -> bool:
    """True if ``demo.customers`` exists (the marker that the lab was seeded)."""
    with svc_mysql.connect_admin(layout) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s "
                    "AND table_name = 'customers'", (DATABASE,))
        return cur.fetchone()[0] > 0


def customer_rows(rows: int) -> list[tuple]:
    rng = random.Random("customers")
    result = []
    for i in range(1, rows + 1):
        name = f"{rng.choice(NAMES)} {i}"
        result.append((
            i, f"Customer{i}@Example.COM", name, rng.choice(COUNTRIES),
            None if i % 7 == 0 else dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20000)),
            round(rng.uniform(-500, 10000), 2), None if i % 5 == 0 else round(rng.uniform(0, 5), 2),
            0 if i % 11 == 0 else 1, BASE_TIME + dt.timedelta(seconds=i * 37, microseconds=i % 1000000),
            None if i % 3 else f"notes for {name}; quote ' and backslash \\ and tab\t.",
            None if i % 4 else bytes(rng.randrange(256) for _ in range(16)),
            None if i % 2 else f'{{"newsletter": {str(i % 4 == 0).lower()}, "tier": {i % 3}}}',
        ))
    return result


def product_rows(count: int = 50) -> list[tuple]:
    rng = random.Random("products")
    return [(i, f"SKU-{i:05d}", f"Product {i}", round(rng.uniform(1, 300), 2)) for i in range(1, count + 1)]


def order_rows(rows: int, customers: int, products: int) -> tuple[list[tuple], list[tuple]]:
    """``2 * rows`` orders (each customer id < ``customers``) and 1-3 items per order."""
    rng = random.Random("orders")
    orders, items = [], []
    for i in range(1, 2 * rows + 1):
        customer = rng.randrange(1, customers + 1)
        flags = ",".join(f for f in ("gift", "express", "fragile") if rng.random() < 0.2)
        lines = [(i, n, rng.randrange(1, products + 1), rng.randrange(1, 5), round(rng.uniform(1, 300), 2))
                 for n in range(1, rng.randrange(2, 5))]
        total = round(sum(q * p for *_, q, p in lines), 2)
        orders.append((i, customer, rng.choice(STATUSES), flags, total,
                       None if i % 6 == 0 else round(rng.uniform(0.1, 40), 3),
                       BASE_TIME + dt.timedelta(minutes=i * 3), None if i % 4 else f"order {i}"))
        items.extend(lines)
    return orders, items


def seed_mysql(layout: Layout, rows: int) -> None:
    with svc_mysql.connect_admin(layout) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4")
        cur.execute(f"USE {DATABASE}")
        for statement in TABLES + APP_SCHEMA + ROUTINES:
            cur.execute(statement)
        products = product_rows()
        orders, items = order_rows(rows, rows, len(products))
        conn.autocommit(False)
        cur.executemany("INSERT IGNORE INTO customers VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        customer_rows(rows))
        cur.executemany("INSERT IGNORE INTO products VALUES (%s,%s,%s,%s)", products)
        cur.executemany("INSERT IGNORE INTO orders VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", orders)
        cur.executemany("INSERT IGNORE INTO order_items VALUES (%s,%s,%s,%s,%s)", items)
        conn.commit()
    log.info("seed: mysql %s: %d customers, %d orders, %d items", DATABASE, rows, len(orders), len(items))


def seed_redis(layout: Layout, rows: int) -> None:
    count = max(10, min(rows, 1000))
    rng = random.Random("redis")
    month = 30 * 86400
    db0 = svc_redis.client(layout, db=0).pipeline(transaction=False)
    for i in range(1, count + 1):
        db0.set(f"user:{i}:name", f"{rng.choice(NAMES)} {i}")
        db0.hset(f"customer:{i}", mapping={"email": f"customer{i}@example.com", "visits": i % 17,
                                           "country": rng.choice(COUNTRIES)})
        db0.zadd("leaderboard", {f"user:{i}": rng.randrange(100000)})
        db0.sadd(f"tags:{rng.choice(['red', 'green', 'blue'])}", f"user:{i}")
    db0.delete("queue:emails", "events")
    db0.rpush("queue:emails", *[f"mail-{i}" for i in range(1, 101)])
    for i in range(1, 51):
        db0.xadd("events", {"type": "login", "user": str(i)}, id=f"1700000000000-{i}")
    for i in range(1, 21):
        db0.set(f"session:{i}", f"token-{i}", ex=month)
    db0.execute()
    db1 = svc_redis.client(layout, db=1).pipeline(transaction=False)
    for i in range(1, count // 2 + 1):
        db1.set(f"cache:page:{i}", f"<html>page {i}</html>", ex=month)
    db1.hset("config", mapping={"feature.x": "on", "limit": "100"})
    db1.set("binary:blob", bytes(range(256)))
    db1.execute()
    db2 = svc_redis.client(layout, db=2).pipeline(transaction=False)
    for day in range(1, 31):
        db2.zadd("stats:daily", {f"2024-01-{day:02d}": day * 10})
    db2.sadd("stats:countries", *COUNTRIES)
    db2.delete("stats:log")
    db2.rpush("stats:log", *[f"entry {i}" for i in range(1, 51)])
    db2.set("stats:ephemeral", "x", ex=month)
    db2.execute()
    log.info("seed: redis dbs 0-2 (%d users)", count)


def seed_files(layout: Layout) -> None:
    """A few storage files; ``uploads/welcome.txt`` is also a row of ``demo.files``."""
    storage = layout.app_storage
    files = {
        Path("seed/README.txt"): b"Seed files of the Lifeboat demo app.\n",
        Path("seed/blob.bin"): random.Random("blob").randbytes(64 * 1024),
        Path("seed/docs/\u00fcn\u00efcode name.txt"): "Gr\u00fc\u00dfe aus dem Labor\n".encode(),
        Path("uploads/welcome.txt"): b"Welcome to the demo app.\n",
    }
    for relative, content in files.items():
        target = storage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
    welcome = files[Path("uploads/welcome.txt")]
    with svc_mysql.connect_admin(layout, database=DATABASE) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO files (path, sha256, size) VALUES (%s, %s, %s) "
                    "ON DUPLICATE KEY UPDATE sha256 = VALUES(sha256), size = VALUES(size)",
                    ("uploads/welcome.txt", hashlib.sha256(welcome).hexdigest(), len(welcome)))
    log.info("seed: %d files in %s", len(files), storage)


def seed(layout: Layout, rows: int = DEFAULT_ROWS) -> None:
    """Seed MariaDB (``rows`` customers, ``2*rows`` orders), Redis and the app storage."""
    seed_mysql(layout, rows)
    seed_redis(layout, rows)
    seed_files(layout)
