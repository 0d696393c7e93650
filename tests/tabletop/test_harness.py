"""How the tabletop judges a step, without an instance: a step holds only when it checked
something and every check held; a failed `require` stops it; whatever else stops it is its
FAIL with the reason; and a step that needs the model FAILs, never passes, when the
instance's model cannot be played."""

from __future__ import annotations

from ramparts.tabletop.harness import NOT_SCRIPTED, Tabletop
from ramparts.tabletop.report import Verdict
from ramparts.tabletop.target import DrillError, Target


def _tabletop() -> Tabletop:
    # Nothing listens on the discard port: nothing here may reach an instance.
    return Tabletop(Target(base_url="http://127.0.0.1:9", report={"users": []}))


def test_a_step_holds_only_when_every_check_held() -> None:
    tabletop = _tabletop()
    tabletop.section("phase")
    with tabletop.step("S-1", "all hold", "two things") as step:
        step.check(True, "one held")
        step.check(True, "two held")
    with tabletop.step("S-2", "one does not", "two things") as step:
        step.check(True, "one held")
        step.check(False, "two: 500")
        step.check(True, "three held")  # checked on: one failure does not stop a step
    with tabletop.step("S-3", "checks nothing", "something"):
        pass

    held, failed, empty = tabletop.rows
    assert (held.verdict, held.observed, held.section) == (
        Verdict.PASS,
        "one held; two held",
        "phase",
    )
    assert failed.verdict is Verdict.FAIL
    assert failed.observed == "two: 500; one held; three held"  # what failed comes first
    assert empty.verdict is Verdict.FAIL
    assert empty.observed == "the step checked nothing"


def test_require_stops_the_step_and_an_exception_is_its_fail() -> None:
    tabletop = _tabletop()
    reached = []
    with tabletop.step("S-1", "required", "201") as step:
        step.require(False, "answered 409")
        reached.append("after require")
    with tabletop.step("S-2", "broken", "an answer") as step:
        step.check(True, "a first answer")
        raise DrillError("the instance does not answer")
    with tabletop.step("S-3", "goes on", "the next step is played") as step:
        step.check(True, "played")

    stopped, broken, next_one = tabletop.rows
    assert reached == []
    assert (stopped.verdict, stopped.observed) == (Verdict.FAIL, "answered 409")
    assert broken.verdict is Verdict.FAIL
    assert broken.observed.startswith(
        "the step could not complete: DrillError: the instance does not answer"
    )
    assert next_one.verdict is Verdict.PASS


def test_a_model_step_fails_when_the_model_is_not_scripted() -> None:
    tabletop = _tabletop()
    with tabletop.step("S-1", "the model calls a tool", "refused") as step:
        tabletop.play([{"tool_calls": [{"name": "any_tool", "arguments": {}}]}])
        step.check(True, "never reached")

    (row,) = tabletop.rows
    assert row.verdict is Verdict.FAIL
    assert row.observed == NOT_SCRIPTED
    assert "--script" in NOT_SCRIPTED
