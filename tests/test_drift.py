"""The host drifting while the latency table is built (issue 15): a slow phase must not end up in the table.

A slow phase is simulated where every timing passes (`timing._one_attempt`): for a few seconds of the
build, every model, the sentinel included, runs 1.4× slower, as a host does when other tenants, clocks or
heat slow it down. The table built through it must predict the search space's networks as a table built
on a quiet host does, and the run must say that it met a slow phase.
"""

from __future__ import annotations

import time

import pytest

from hwprune import export, measure, profiles, runtime, timing
from hwprune.latency import LatencyPredictor, build_template
from hwprune.prune import graph
from hwprune.runtime import KERNEL_PROTOCOL, HostReading, RuntimeSettings, Sentinel

CPU = RuntimeSettings(("CPUExecutionProvider",), 1, "all")
SLOWER = 1.4


def _table(template, dense, folder, seed=0) -> LatencyPredictor:
    predictor = LatencyPredictor(template, profiles.open_profile("drift", CPU, folder, ""), KERNEL_PROTOCOL)
    measure.build_table(predictor, dense, 16, 0.85, networks=6, seed=seed)
    return predictor


@pytest.mark.slow
@pytest.mark.timing
def test_a_slow_phase_during_the_table_build_is_detected_and_does_not_bias_predictions(
        cnn, example, tmp_path, monkeypatch):
    dense = {g.name: g.width for g in graph.channel_groups(cnn, example)}
    template = build_template(cnn, example, export.export(cnn, example), dense, ())
    held_out = measure.search_space_configs(dense, 16, 0.85, 6, seed=0)  # measured in the build, never calibrated
    quiet = _table(template, dense, tmp_path / "quiet")

    real = timing._one_attempt
    start = time.monotonic()

    def slow_phase(sess, binding, protocol):
        ms = real(sess, binding, protocol)
        return ms * SLOWER if 0.3 <= time.monotonic() - start <= 4.0 else ms

    monkeypatch.setattr(timing, "_one_attempt", slow_phase)
    drifted = _table(template, dense, tmp_path / "drifted")
    assert time.monotonic() - start > 4.0, "the build ended inside the slow phase: lengthen the table"

    errors = [drifted(w) / quiet(w) - 1 for w in held_out]
    print("drifted vs quiet table, held-out networks:", [f"{e:+.1%}" for e in errors])
    assert max(abs(e) for e in errors) <= 0.10, errors
    # An entry from the simulated phase reads ~SLOWER× the quietest level; the host's own drift moves readings
    # by ~10 %, and the quiet level can still fall after an entry was taken, so the line is drawn halfway.
    halfway = (1 + SLOWER) / 2
    slow = [entry for entry in drifted.profile.entries.values()
            if drifted.sentinel.slowdown(runtime.HostReading(entry.host_call_ms, entry.host_compute_ms)) >= halfway]
    assert not slow, f"{len(slow)} entries kept from the slow phase"
    assert drifted.sentinel.slow_readings > 0


def test_sentinel_marks_readings_above_its_quietest_level_as_slow():
    sentinel = Sentinel(CPU)
    reading = sentinel.read()
    quiet = sentinel.quiet
    assert quiet.call_ms <= reading.call_ms and quiet.compute_ms <= reading.compute_ms and sentinel.is_quiet(quiet)
    slow_call = HostReading(quiet.call_ms * (1 + runtime.CALL_SLOW_ABOVE) * 1.01, quiet.compute_ms)
    slow_compute = HostReading(quiet.call_ms, quiet.compute_ms * (1 + runtime.SLOW_PHASE_ABOVE) * 1.01)
    assert not sentinel.is_quiet(slow_call) and not sentinel.is_quiet(slow_compute)
    assert sentinel.slowdown(HostReading(2 * quiet.call_ms, quiet.compute_ms)) == pytest.approx(2.0)
