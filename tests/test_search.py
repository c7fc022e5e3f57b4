"""The search places every trial on the latency target and never grows a group past its current width."""

from hwprune.search import SearchSpace, on_target, search

DENSE = {"a": 64, "b": 128, "c": 256}
COST = {"a": 3.0, "b": 1.0, "c": 0.5}  # ms per channel: an uneven synthetic latency model


def predict(widths: dict[str, int]) -> float:
    return 0.01 + sum(COST[g] * w for g, w in widths.items()) / 1000


def space(current: dict[str, int] | None = None) -> SearchSpace:
    return SearchSpace(DENSE, current or DENSE, max_prune_rate=0.85, channel_multiple=8)


def test_equal_shares_give_the_least_uniform_pruning_that_meets_the_target():
    target = 0.5 * predict(DENSE)
    rate, widths = on_target(space(), predict, target, dict.fromkeys(DENSE, 1.0))
    assert predict(widths) <= target
    looser = space().widths_for(dict.fromkeys(DENSE, rate - 0.02))
    assert looser != widths and predict(looser) > target  # a little less pruning misses the target
    assert all(abs(1 - w / DENSE[g] - rate) < 8 / DENSE[g] for g, w in widths.items())  # uniform up to a step


def test_shares_steer_pruning_and_every_trial_meets_the_target():
    target = 0.4 * predict(DENSE)
    _, spare_a = on_target(space(), predict, target, {"a": 0.05, "b": 1.0, "c": 1.0})
    _, spare_c = on_target(space(), predict, target, {"a": 1.0, "b": 1.0, "c": 0.05})
    assert spare_a["a"] > spare_c["a"] and spare_c["c"] > spare_a["c"]

    def evaluate(widths: dict[str, int]) -> float:  # a proxy that prefers wide "a" layers
        return widths["a"] / 64 + 0.1 * widths["c"] / 256

    outcome = search(space(), predict, evaluate, target, trials=12, seed=0)
    assert all(t.feasible and t.predicted_ms <= target for t in outcome.trials)
    assert outcome.trials[0].widths == on_target(space(), predict, target, dict.fromkeys(DENSE, 1.0))[1]
    assert outcome.proxy_accuracy == max(t.proxy_accuracy for t in outcome.trials)
    assert outcome.widths["a"] > outcome.trials[0].widths["a"]  # the search moved pruning off group "a"


def test_groups_never_grow_past_their_current_width():
    current = {"a": 32, "b": 128, "c": 128}
    target = 0.8 * predict(current)
    _, widths = on_target(space(current), predict, target, {"a": 0.05, "b": 1.0, "c": 1.0})
    assert all(widths[g] <= current[g] for g in DENSE) and predict(widths) <= target
