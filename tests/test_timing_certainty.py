"""Decisions that rest on timings say how sure they are (issue 15): the report's measurements carry their spread,
samples, attempts and the host's state, a budget met or missed within the spread is called a close call, and the
alignment sweep's choice of channel multiple comes with the rounding cost of every multiple."""

from __future__ import annotations

import pytest
from test_bad_input import _report

from hwprune import measure, report

TIMING = {"spread": 0.02, "samples": 320, "attempts": 1, "quiet_share": 0.75, "host_slowdown": 1.03}


def _measured(pruned_ms: float) -> dict:
    data = _report()
    for name, ms in (("dense", 1.0), ("pruned", pruned_ms)):
        data[name].update(latency_ms=ms, latency_p90_ms=ms * 1.1, latency_source="measured", timing=TIMING)
    data["profile"].update(provenance="measured", measured_here=True, host_slow_share=0.4,
                           alignment_rounding_cost={"4": 0.0, "8": 0.01, "16": 0.02, "32": 0.2})
    data["budget_met"] = pruned_ms <= data["budget_ms"]
    return data


def test_report_states_each_measurement_s_certainty_and_the_host_state():
    data = _measured(0.40)
    assert report.problems(data) == []
    md = report.to_markdown(data)
    row = next(line for line in md.splitlines() if line.startswith("| measurement |"))
    assert row.count("spread 2.0%, 320 calls, 1 attempt(s), 75% taken in quiet phases, host 1.03× its quietest") == 2
    assert "40% of the sentinel's readings found a slow phase" in md
    assert "16: +2.0%, 32: +20.0%" in md
    assert "close call" not in md  # 0.40 ms is 20 % under the 0.5 ms budget, far outside a 2 % spread


@pytest.mark.parametrize("pruned_ms", [0.495, 0.505])
def test_a_budget_decided_within_the_measurement_s_spread_is_a_close_call(pruned_ms):
    md = report.to_markdown(_measured(pruned_ms))
    assert "within the measurement's spread of 2.0% from the budget: a close call" in md
    assert ("**met**" in md) == (pruned_ms <= 0.5)


def test_a_report_without_timing_details_still_validates():
    """Reports written before timings carried their certainty (and predicted-only reports) have none."""
    data = _report()
    assert report.problems(data) == [] and "| measurement | — | — |" in report.to_markdown(data)


def test_rounding_costs_show_how_clear_the_channel_multiple_was():
    channels = list(range(8, 65))
    stepped = [float(-(-c // 16)) for c in channels]  # flat within blocks of 16
    costs = measure.rounding_costs(channels, stepped)
    assert costs[4] == costs[8] == costs[16] == 0.0
    assert costs[32] > measure.ROUNDING_COST_LIMIT
    assert measure.preferred_channel_multiple(channels, stepped) == 16
    sweep = measure.AlignmentSweep(tuple(channels), tuple(stepped), 16).to_json()
    assert sweep["rounding_cost"]["32"] == pytest.approx(costs[32], abs=1e-4)
    assert sweep["rounding_cost_limit"] == measure.ROUNDING_COST_LIMIT
