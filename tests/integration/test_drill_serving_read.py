"""The drill's RTO ends on a real read of the data it wrote, not on a ping.

Against the lab's demo app: ``GET /canary/latest?from=A&to=B`` returns each store's newest
canary record in the drill's seq range, read from MySQL, Redis and the canary file; the
harness's ``serving_problem`` says the app is not serving while ``/health`` is 200 but no
record of the drill can be read.
"""

from __future__ import annotations

import time

import requests

from dr_tests import measure


def post_canary(url: str, seq: int, ts: float) -> None:
    answer = requests.post(f"{url}/canary", json={"seq": seq, "ts": ts}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_latest_canary_is_read_from_every_store_within_the_range(lab_env):
    url = lab_env["LAB_APP_URL"]
    base = int(time.time() * 1000) * 1000 + 500
    for offset in range(3):
        post_canary(url, base + offset, 1000.0 + offset)
    post_canary(url, base + 50, 2000.0)  # outside the range asked for below

    answer = requests.get(f"{url}/canary/latest", params={"from": base, "to": base + 10}, timeout=10)

    assert answer.status_code == 200
    newest = answer.json()
    assert newest["mysql"] == {"seq": base + 2, "ts": 1002.0}
    assert newest["file"] == {"seq": base + 2, "ts": 1002.0}
    assert newest["redis"] == {"seq": base + 2, "ts": None}
    empty = requests.get(f"{url}/canary/latest", params={"from": base + 100, "to": base + 200}, timeout=10)
    assert empty.status_code == 200 and empty.json() == {"mysql": None, "redis": None, "file": None}
    assert requests.get(f"{url}/canary/latest", params={"from": "x"}, timeout=10).status_code == 400


def test_a_healthy_app_without_the_drills_data_is_not_serving(lab_env):
    url = lab_env["LAB_APP_URL"]
    base = int(time.time() * 1000) * 1000 + 900
    seq_range = (base, base + 10)
    assert measure.health_ok(url)

    problem = measure.serving_problem(url, seq_range, ["mysql", "redis", "file"])
    assert problem == "no canary record of this drill readable from mysql, redis, file"
    assert measure.wait_serving(url, seq_range, ["mysql"], timeout_s=1.0) is None

    post_canary(url, base + 1, 5.0)
    started = time.time()
    served_at = measure.wait_serving(url, seq_range, ["mysql", "redis", "file"], timeout_s=10.0)
    assert served_at is not None and started <= served_at <= time.time()
