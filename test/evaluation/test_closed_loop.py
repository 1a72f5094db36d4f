"""The evaluation report's statistics (the rollouts themselves are in test_eval_ros.py)."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinvla_ros.evaluation.closed_loop import EpisodeOutcome, EvaluationReport, wilson_interval


@pytest.mark.parametrize("successes, trials, low, high", [
    (5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (30, 50, 0.4618, 0.7239), (1, 1, 0.2065, 1.0),
])
def test_the_wilson_interval_matches_published_values(successes, trials, low, high):
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=1e-4)


@given(trials=st.integers(1, 500), data=st.data())
def test_the_interval_holds_the_rate_and_narrows_with_more_trials(trials, data):
    successes = data.draw(st.integers(0, trials))
    low, high = wilson_interval(successes, trials)
    assert 0.0 <= low <= successes / trials <= high <= 1.0
    wider = wilson_interval(successes, trials)
    narrower = wilson_interval(4 * successes, 4 * trials)
    assert narrower[1] - narrower[0] < wider[1] - wider[0] or math.isclose(narrower[1] - narrower[0], wider[1] - wider[0])


def test_the_report_counts_successes_and_times_only_successful_episodes():
    report = EvaluationReport("lift_box", "pick up the red box", "runs/x/final", "rtc", 40.0, [
        EpisodeOutcome(1, True, "lifted 9 cm", 10.0), EpisodeOutcome(2, False, "box on the table", 40.0),
        EpisodeOutcome(3, True, "lifted 8 cm", 14.0)])
    data = report.to_json()
    assert (data["successes"], data["num_episodes"]) == (2, 3)
    assert data["success_rate"] == pytest.approx(2 / 3) and data["mean_time_to_success_s"] == pytest.approx(12.0)
    assert data["confidence_interval_95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert [e["seed"] for e in data["episodes"]] == [1, 2, 3]
    assert "2/3 succeeded" in report.summary() and "12.0 s" in report.summary()
    assert EvaluationReport("lift_box", "", "", "rtc", 40.0).mean_time_to_success_s is None
