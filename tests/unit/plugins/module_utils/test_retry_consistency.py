"""retry(): only retryable errors are retried, with bounded exponential backoff;
consistency: dumped row texts parse back to their values."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.ops.consistency import split_row_values
from ansible_collections.lifeboat.dr.plugins.module_utils.ops.orchestrate import parse_components, set_type_for
from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import (
    ConfigError,
    ConnectionFailure,
    TamperedData,
)
from ansible_collections.lifeboat.dr.plugins.module_utils.util.retry import backoff_delays, retry


def always_down():
    """A call whose server never answers."""
    raise ConnectionFailure("down")


def test_connection_failures_are_retried_with_doubling_waits_then_succeed():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionFailure("refused")
        return "ok"

    assert retry(flaky, attempts=3, backoff=1.5, sleep=waits.append) == "ok"
    assert waits == [1.5, 3.0]


def test_the_last_connection_failure_is_raised_after_the_bounded_attempts():
    waits = []
    with pytest.raises(ConnectionFailure):
        retry(always_down, attempts=2, backoff=1, sleep=waits.append)
    assert waits == [1]


def test_data_errors_are_never_retried():
    calls = []

    def bad():
        calls.append(1)
        raise TamperedData("chunk 3 fails authentication")

    with pytest.raises(TamperedData):
        retry(bad, attempts=5, sleep=lambda s: None)
    assert len(calls) == 1


def test_backoff_is_capped():
    assert backoff_delays(5, 10, max_delay=25) == [10, 20, 25, 25]


def test_row_texts_parse_with_quotes_escapes_and_nulls():
    expected = ["1", "it's", "a,b", None, "X'00FF'", "x\\y\n"]
    assert split_row_values("(1,'it\\'s','a,b',NULL,X'00FF','x\\\\y\\n')") == expected


def test_components_parse_in_canonical_order_and_unknown_names_are_refused():
    assert parse_components("redis, mysql,redis") == ["mysql", "redis"]
    assert set_type_for(["vault"]) == "vault" and set_type_for(["mysql", "app"]) == "full"
    with pytest.raises(ConfigError):
        parse_components("mysql,postgres")
