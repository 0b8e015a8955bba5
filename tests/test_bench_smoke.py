"""The benchmark harness at 10,000 volunteers, so that it cannot rot between real runs.

Only that every measurement produces numbers and every request was answered as the
service means to answer it: timings are never asserted here (they belong to
``bench/``, run on a quiet machine).
"""

from __future__ import annotations

from pathlib import Path

from bench.run import PHASES, SMOKE, floor_table, run, table


def test_benchmark_harness_measures_every_target_at_ten_thousand_volunteers(
    committed_db: str, tmp_path: Path
) -> None:
    report = run(
        committed_db,
        volunteers=10_000,
        plan=SMOKE,
        phases=set(PHASES),
        reseed=False,
        logs=tmp_path,
    )

    assert report["seed"]["volunteers"] == 10_000
    assert report["seed"]["places"] == 15_000
    results = report["results"]
    for name in (
        "floor_pgbench_ms",
        "no_index_pgbench_ms",
        "naive_orm_haversine_ms",
        "selection_ms",
        "selection_with_aed_ms",
    ):
        assert results[name]["n"] > 0, name
        assert results[name]["p99"] >= results[name]["p50"] > 0, name
    alert_path = results["alert_path"]
    assert set(alert_path["http_statuses"]) == {"201"}
    assert alert_path["alerts_received"] == alert_path["alerts_expected"] > 0
    assert alert_path["incidents_fully_received"] == alert_path["incidents_alerted"] > 0
    for phase in ("webhooks", "webhooks_by_incident"):
        assert set(results[phase]["http_statuses"]) == {"200"}, phase
        assert results[phase]["requests_per_s"] > 0, phase
        assert results[phase]["replies_to_alerts"] > 0, phase
    assert set(results["single_locations"]["http_statuses"]) == {"200"}
    assert results["single_locations"]["requests_per_s"] > 0
    assert set(results["bulk_locations"]["http_statuses"]) == {"200"}
    assert results["bulk_locations"]["points_per_s"] > 0
    assert results["floors"]["provider_send"]["burst_of_30_ms"]["n"] > 0
    assert "candidate selection" in table(report)
    assert "service CPU per reply" in floor_table(report)
