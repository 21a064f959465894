"""Retention: GFS decisions on a fabricated calendar, protections, and prune on a real small store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.ops import retention as rt
from ansible_collections.lifeboat.dr.plugins.module_utils.store import audit, jobs
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store
from ansible_collections.lifeboat.dr.plugins.module_utils.store.ids import utc_now

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def day(month: int, dom: int, hour: int = 2) -> datetime:
    return datetime(2025, month, dom, hour, 0, tzinfo=UTC)


def daily_fulls(first: datetime, last: datetime, **overrides) -> list[rt.SetRecord]:
    """One full set at 02:00 every day from ``first`` to ``last`` inclusive, id = full_<YYYYMMDD>."""
    out = []
    when = first
    while when <= last:
        set_id = f"full_{when:%Y%m%d}"
        out.append(rt.SetRecord(set_id, "full", when, **overrides.get(set_id, {})))
        when += timedelta(days=1)
    return out


def kept(decisions: list[rt.Decision]) -> list[str]:
    return [d.set_id for d in decisions if d.keep]


def policy(**rule) -> rt.RetentionPolicy:
    return rt.RetentionPolicy(rules={"default": rt.GfsRule(**rule)}, min_age_s=3600, binlog_keep_within_s=0)


def test_gfs_on_sixty_days_keeps_exactly_last_daily_weekly_and_monthly():
    sets = daily_fulls(day(1, 1), day(3, 1))
    decisions = rt.plan_retention(sets, policy(keep_last=2, keep_daily=4, keep_weekly=3, keep_monthly=3), NOW)
    # weekly: ISO weeks 2025-W09 (Mar 1), W08 (newest Feb 23), W07 (newest Feb 16);
    # monthly: 2025-03 (Mar 1), 2025-02 (Feb 28), 2025-01 (Jan 31)
    assert kept(decisions) == ["full_20250131", "full_20250216", "full_20250223", "full_20250226",
                               "full_20250227", "full_20250228", "full_20250301"]
    reasons = {d.set_id: d.reasons for d in decisions}
    assert reasons["full_20250216"] == ["keep_weekly: newest of 2025-W07 (3 of 3)"]
    assert reasons["full_20250131"] == ["keep_monthly: newest of 2025-01 (3 of 3)"]
    assert "keep_last: 1 of the 2 newest" in reasons["full_20250301"]
    assert "newest full set" in reasons["full_20250301"]
    assert reasons["full_20250115"][0].startswith("no rule keeps it (keep_last=2 daily=4 weekly=3 monthly=3")
    assert len(decisions) == 60


def test_keep_within_counts_from_the_newest_set_not_from_now():
    sets = daily_fulls(day(1, 1), day(1, 10))
    decisions = rt.plan_retention(sets, policy(keep_within_s=3 * 86400), NOW)
    assert kept(decisions) == ["full_20250107", "full_20250108", "full_20250109", "full_20250110"]


def test_newest_verified_full_is_never_deleted():
    sets = daily_fulls(day(2, 1), day(2, 20), full_20250203={"status": "verified"})
    decisions = rt.plan_retention(sets, policy(keep_last=1), NOW)
    assert kept(decisions) == ["full_20250203", "full_20250220"]
    assert "newest verified full backup" in {d.set_id: d.reasons for d in decisions}["full_20250203"]


def test_failed_sets_fill_no_daily_slot_and_go():
    sets = daily_fulls(day(2, 1), day(2, 5), full_20250205={"status": "failed"}, full_20250204={"status": "failed"})
    decisions = rt.plan_retention(sets, policy(keep_daily=2), NOW)
    # the newest set is kept anyway (newest of its type); daily slots go to Feb 3 and Feb 2
    assert kept(decisions) == ["full_20250202", "full_20250203", "full_20250205"]
    gone = {d.set_id: d.reasons for d in decisions if not d.keep}
    assert any("verification failed" in r for r in gone["full_20250204"])


def test_sets_younger_than_min_age_are_kept_whatever_the_rules():
    sets = [rt.SetRecord("full_a", "full", NOW - timedelta(minutes=50)),
            rt.SetRecord("full_b", "full", NOW - timedelta(minutes=20))]
    decisions = rt.plan_retention(sets, policy(), NOW)
    assert kept(decisions) == ["full_a", "full_b"]
    assert any("min_age" in r for r in decisions[0].reasons)


def test_incremental_parents_of_a_kept_set_are_kept_transitively():
    sets = [rt.SetRecord("app_1", "app", day(1, 1)),
            rt.SetRecord("app_2", "app", day(1, 2), depends_on=("app_1",)),
            rt.SetRecord("app_3", "app", day(1, 3), depends_on=("app_1", "app_2")),
            rt.SetRecord("app_0", "app", day(1, 1, 1))]
    decisions = {d.set_id: d for d in rt.plan_retention(sets, policy(keep_last=1), NOW)}
    assert decisions["app_3"].keep and decisions["app_2"].keep and decisions["app_1"].keep
    assert "parent of kept incremental set app_3" in decisions["app_1"].reasons
    assert not decisions["app_0"].keep


def test_binlogs_needed_by_the_oldest_kept_base_are_kept_older_ones_go():
    ident = "srv-1"
    bases = [rt.SetRecord(f"full_{n}", "full", day(1, n), base=rt.BinlogRef(ident, 1, 10 * n)) for n in (1, 2, 3)]
    binlogs = [rt.SetRecord(f"binlog_{seq}", "binlog", day(1, 1) + timedelta(hours=seq),
                            binlog=rt.BinlogRef(ident, 1, seq)) for seq in (5, 10, 19, 20, 35)]
    binlogs.append(rt.SetRecord("binlog_g2", "binlog", day(1, 3), binlog=rt.BinlogRef(ident, 2, 1)))
    other = rt.SetRecord("binlog_other", "binlog", day(1, 1), binlog=rt.BinlogRef("srv-2", 1, 1))
    decisions = {d.set_id: d for d in rt.plan_retention(bases + binlogs + [other], policy(keep_last=2), NOW)}
    assert [s for s in ("full_1", "full_2", "full_3") if decisions[s].keep] == ["full_2", "full_3"]
    assert {s: decisions[s].keep for s in ("binlog_5", "binlog_10", "binlog_19", "binlog_20", "binlog_35",
                                           "binlog_g2", "binlog_other")} == {
        "binlog_5": False, "binlog_10": False, "binlog_19": False, "binlog_20": True, "binlog_35": True,
        "binlog_g2": True, "binlog_other": True}
    assert decisions["binlog_20"].reasons == ["needed to roll forward kept base full_2"]
    assert "before the binlog position of every kept base" in decisions["binlog_19"].reasons[0]


def test_kept_aside_vault_set_goes_only_after_its_age_and_a_verified_restore():
    def aside(set_id, when, verified):
        return rt.SetRecord(set_id, "vault", when, kept_aside_before="vault_x", restore_verified=verified)
    sets = [rt.SetRecord("vault_live", "vault", day(2, 28)),
            aside("vault_old_unverified", day(1, 1), False), aside("vault_old_verified", day(1, 2), True),
            aside("vault_recent_verified", day(2, 27), True)]
    decisions = {d.set_id: d for d in rt.plan_retention(sets, rt.RetentionPolicy(), NOW)}
    assert not decisions["vault_old_verified"].keep
    assert decisions["vault_old_unverified"].keep and decisions["vault_recent_verified"].keep
    assert "not recorded as verified" in decisions["vault_old_unverified"].reasons[0]
    # kept-aside copies are not "the newest vault set"
    assert "newest vault set" in decisions["vault_live"].reasons


def test_policy_from_options_per_type_and_validation():
    pol = rt.policy_from_options({"keep_daily": 3, "keep_within_days": 0, "per_type": {"app": {"keep_last": 5}},
                                  "verification_days": 10})
    assert pol.rule_for("full") == rt.GfsRule(keep_daily=3, keep_weekly=4, keep_monthly=3)
    assert pol.rule_for("app").keep_last == 5 and pol.rule_for("app").keep_daily == 3
    assert pol.verification_records_s == 10 * 86400
    with pytest.raises(rt.ConfigError):
        rt.policy_from_options({"keep_last": -1})


# --------------------------------------------------------------------------- real store
@pytest.fixture()
def ring(tmp_path: Path) -> keys.KeyRing:
    keys.create_key_file(tmp_path / "k.key")
    return keys.KeyRing(keys.FileKEK.load(tmp_path / "k.key"))


def small_set(store: Store, ring: keys.KeyRing, set_type: str = "full") -> str:
    with store.begin_set(set_type, ["redis"], ring) as writer:
        with writer.artifact("redis", "dump.rdb") as out:
            out.write(b"x" * 1000)
        writer.publish()
        return writer.set_id


def test_prune_check_mode_lists_and_real_run_deletes_with_side_data(tmp_path: Path, ring):
    store = Store(tmp_path / "store", reserve_bytes=0)
    ids = [small_set(store, ring) for _unused in range(3)]
    aside_root = tmp_path / "app"
    aside_root.mkdir()
    old_aside = aside_root / "storage.lbprev-20240101T000000Z"
    unverified_aside = aside_root / "storage.lbprev-20240102T000000Z"
    old_aside.mkdir()
    unverified_aside.mkdir()
    jobs.record_job(store.root, "restore", start=utc_now(), result="ok", verified=True,
                    kept_aside=[str(old_aside)])
    drills = store.root / "drills" / "reports"
    drills.mkdir(parents=True)
    (drills / "old.html").write_text("x")
    pol = rt.RetentionPolicy(rules={"default": rt.GfsRule(keep_last=1)}, min_age_s=0)
    later = utc_now() + timedelta(days=400)

    preview = rt.prune(store, pol, check_mode=True, now=later, kept_aside_roots=[aside_root])
    assert [d["set_id"] for d in preview["deleted_sets"]] == ids[:2]
    assert all((store.root / i).is_dir() for i in ids) and old_aside.exists()
    assert {i["path"] for i in preview["deleted_side"] if i["kind"] == "kept_aside"} == {str(old_aside)}
    assert str(drills / "old.html") in {i["path"] for i in preview["deleted_side"]}

    done = rt.prune(store, pol, now=later, kept_aside_roots=[aside_root])
    assert done["changed"] and [d["set_id"] for d in done["deleted_sets"]] == ids[:2]
    assert [s.set_id for s in store.list_sets()] == ids[2:]
    assert not old_aside.exists() and unverified_aside.exists()
    assert not (store.root / "verifications" / ids[0]).exists()
    assert (store.root / "verifications" / ids[2]).is_dir()
    assert not (drills / "old.html").exists()
    assert jobs.read_jobs(store.root, kind="prune")[-1]["result"] == "ok"
    assert audit.read_records(store.root)[-1]["action"] == "prune"
    again = rt.prune(store, pol, now=later, kept_aside_roots=[aside_root])
    assert not again["changed"]


def test_prune_refuses_while_another_prune_holds_the_lock(tmp_path: Path, ring):
    store = Store(tmp_path / "store", reserve_bytes=0)
    small_set(store, ring)
    with store.lock("prune"):
        with pytest.raises(rt.LifeboatError) as err:
            rt.prune(store, rt.RetentionPolicy())
    assert "prune" in str(err.value)
    json.dumps(rt.prune(store, rt.RetentionPolicy(), check_mode=True))  # JSON-serialisable result
