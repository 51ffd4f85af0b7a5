"""The update's state machine (agent/firmware/machine.py), row by row and as a whole (issue #9).

The table is checked row by row, every move it lacks is refused, the graph is checked for
reachability and termination, and a property test drives random event sequences — including
an attacker rewriting the slot and daemon restarts at any point — through the same rules the
runner uses, asserting the one promise: nothing is armed unless this run verified the signature
over a digest and read that same digest back from the slot.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.firmware import machine
from agent.firmware.machine import (
    CANCELLABLE,
    RESUME,
    TRANSITIONS,
    Event,
    IllegalMove,
    Phase,
    Proof,
    Resume,
    advance,
    arming_refusal,
    entry_status,
)
from agent.ocpp.v16 import FirmwareStatus as Status

ROWS = [(source, row) for row in TRANSITIONS for source in sorted(row.sources)]


@pytest.mark.parametrize(("source", "row"), ROWS, ids=[f"{s}-{r.event}" for s, r in ROWS])
def test_each_row_moves_its_phase_and_announces_its_status(source, row):
    assert advance(source, row.event) is row
    assert row.why  # every row names what it implements


def test_the_rows_the_l01_flow_rests_on():
    """The shape of the happy path and of each failure (L01.FR.01/.03/.13/.15/.16/.34)."""
    expected = [
        (Phase.DOWNLOAD_SCHEDULED, Event.RETRIEVE_TIME, Phase.DOWNLOADING, Status.DOWNLOADING),
        (Phase.DOWNLOADING, Event.DOWNLOADED, Phase.VERIFYING, Status.DOWNLOADED),
        (Phase.VERIFYING, Event.SLOT_PROVEN, Phase.VERIFIED, Status.SIGNATURE_VERIFIED),
        (Phase.VERIFIED, Event.INSTALL_DEFERRED, Phase.INSTALL_SCHEDULED, Status.INSTALL_SCHEDULED),
        (Phase.INSTALL_SCHEDULED, Event.INSTALL_STARTED, Phase.INSTALLING, Status.INSTALLING),
        (Phase.INSTALLING, Event.TRIAL_ARMED, Phase.REBOOTING, Status.INSTALL_REBOOTING),
        (Phase.REBOOTING, Event.BOOTED_TARGET, Phase.TRIAL, None),
        (Phase.TRIAL, Event.COMMITTED, Phase.FINISHED, Status.INSTALLED),
        (Phase.VERIFYING, Event.SIGNATURE_INVALID, Phase.FINISHED, Status.INVALID_SIGNATURE),
        (Phase.DOWNLOADING, Event.ATTEMPT_FAILED, Phase.DOWNLOADING, Status.DOWNLOADING),
        (Phase.DOWNLOADING, Event.DOWNLOAD_FAILED, Phase.FINISHED, Status.DOWNLOAD_FAILED),
        (Phase.TRIAL, Event.FELL_BACK, Phase.FINISHED, Status.INSTALLATION_FAILED),
    ]
    for source, event, target, status in expected:
        row = advance(source, event)
        assert (row.target, row.status) == (target, status), (source, event)


def test_every_move_the_table_lacks_is_refused():
    table = {(source, row.event) for source, row in ROWS}
    for phase in Phase:
        for event in Event:
            if (phase, event) not in table:
                with pytest.raises(IllegalMove):
                    advance(phase, event)


def test_finished_is_final_so_a_request_gets_exactly_one_terminal_status():
    assert not any(Phase.FINISHED in row.sources for row in TRANSITIONS)
    terminal = {row.status for row in TRANSITIONS if row.target is Phase.FINISHED}
    assert terminal == {
        Status.DOWNLOAD_FAILED,
        Status.INVALID_SIGNATURE,
        Status.INSTALL_VERIFICATION_FAILED,
        Status.INSTALLATION_FAILED,
        Status.INSTALLED,
    }
    assert terminal == machine.TERMINAL


def closure(start: set[Phase], edges: set[tuple[Phase, Phase]]) -> set[Phase]:
    """Every phase reachable from `start` along `edges`."""
    seen = set(start)
    while more := {b for a, b in edges if a in seen} - seen:
        seen |= more
    return seen


def test_every_phase_is_reachable_and_every_phase_can_end():
    edges = {(source, row.target) for source, row in ROWS}
    assert closure(set(machine.INITIAL), edges) == set(Phase)
    assert closure({Phase.FINISHED}, {(b, a) for a, b in edges}) == set(Phase)


def test_the_trial_is_armed_only_from_installing_and_nothing_moves_back_before_it():
    armed = [row for row in TRANSITIONS if row.event is Event.TRIAL_ARMED]
    assert len(armed) == 1 and armed[0].sources == {Phase.INSTALLING}
    # Once armed, a new request can no longer cancel (L01.FR.26/.27).
    assert {Phase.REBOOTING, Phase.TRIAL, Phase.FINISHED}.isdisjoint(CANCELLABLE)
    assert Phase.INSTALLING in CANCELLABLE


def test_entry_statuses_for_resending_a_lost_one():
    assert entry_status(Phase.DOWNLOAD_SCHEDULED) is Status.DOWNLOAD_SCHEDULED  # L01.FR.13
    assert entry_status(Phase.VERIFIED) is Status.SIGNATURE_VERIFIED
    assert entry_status(Phase.TRIAL) is None
    assert entry_status(Phase.FINISHED) is None  # the job's own outcome is re-sent


def test_the_resume_table_covers_every_phase_and_proves_the_slot_again_before_the_trial():
    assert set(RESUME) == set(Phase)
    for phase in (Phase.VERIFYING, Phase.VERIFIED, Phase.INSTALL_SCHEDULED):
        for new_boot in (False, True):
            assert machine.resume(phase, new_boot) in (
                Resume.PROVE_AGAIN,
                Resume.PROVE_THEN_INSTALL,
            )
    assert machine.resume(Phase.INSTALLING, new_boot=False) is Resume.PROVE_THEN_INSTALL
    assert machine.resume(Phase.INSTALLING, new_boot=True) is Resume.JUDGE_BOOT
    assert machine.resume(Phase.REBOOTING, new_boot=False) is Resume.REBOOT_AGAIN


@pytest.mark.parametrize(
    ("proof", "phase", "refused"),
    [
        (Proof(7, "aa", "aa"), Phase.INSTALLING, None),
        (None, Phase.INSTALLING, "no proof"),
        (Proof(6, "aa", "aa"), Phase.INSTALLING, "another run"),
        (Proof(8, "aa", "aa"), Phase.INSTALLING, "another run"),  # a later run's, not ours
        (Proof(7, "aa", "bb"), Phase.INSTALLING, "does not hold"),
        (Proof(7, "aa", "aa"), Phase.VERIFIED, "arming in phase"),
    ],
)
def test_arming_needs_this_runs_proof_of_the_verified_digest(proof, phase, refused):
    why = arming_refusal(proof, 7, phase)
    assert (why is None) if refused is None else (refused in (why or ""))


# --- a property test over random runs ----------------------------------------------------

GOOD, OTHER = "good-digest", "other-digest"


@dataclasses.dataclass
class World:
    """A job, the slot's real contents, and the runner's in-memory proof."""

    phase: Phase = Phase.DOWNLOADING
    slot: str = ""  # what the slot holds now
    streamed: str | None = None  # the digest the download streamed (the job's digest)
    proof: Proof | None = None
    token: int = 1
    armed_with: list[str] = dataclasses.field(default_factory=list)
    terminal: list[Status] = dataclasses.field(default_factory=list)

    def move(self, event: Event) -> None:
        row = advance(self.phase, event)
        self.phase = row.target
        if row.target is Phase.FINISHED:
            assert row.status is not None
            self.terminal.append(row.status)


ACTIONS = st.sampled_from(
    ["download", "tamper", "prove", "install", "arm", "restart", "fail", "boot"]
)


def step(world: World, action: str) -> None:
    """One thing that can happen, as the runner would react (illegal moves are skipped)."""
    if world.phase is Phase.FINISHED:
        return
    try:
        if action == "download" and world.phase is Phase.DOWNLOADING:
            world.slot = world.streamed = GOOD
            world.move(Event.DOWNLOADED)
        elif action == "tamper":
            # Another owner wrote the slot (only an owner writes it, and a new owner means
            # this run's token was revoked): whatever runs next is a new run, without proof.
            world.slot = OTHER
            world.proof, world.token = None, world.token + 1
        elif action == "prove" and world.phase in (
            Phase.VERIFYING,
            Phase.VERIFIED,
            Phase.INSTALL_SCHEDULED,
            Phase.INSTALLING,
        ):
            assert world.streamed is not None
            world.proof = Proof(world.token, world.streamed, world.slot)
            if world.slot != world.streamed:
                world.move(Event.SLOT_REFUSED)
            elif world.phase is Phase.VERIFYING:
                world.move(Event.SLOT_PROVEN)
        elif action == "install" and world.phase in (Phase.VERIFIED, Phase.INSTALL_SCHEDULED):
            world.move(Event.INSTALL_STARTED)
        elif action == "arm" and world.phase is Phase.INSTALLING:
            if arming_refusal(world.proof, world.token, world.phase) is None:
                world.armed_with.append(world.slot)
                world.move(Event.TRIAL_ARMED)
        elif action == "restart":  # kill -9: nothing in memory survives, a new token
            world.proof, world.token = None, world.token + 1
        elif action == "fail":
            world.move(Event.INTERNAL_ERROR)
        elif action == "boot" and world.phase is Phase.REBOOTING:
            world.move(Event.BOOTED_TARGET)
            world.move(Event.COMMITTED)
    except IllegalMove:
        pass


@settings(max_examples=400, deadline=None)
@given(st.lists(ACTIONS, max_size=40))
def test_random_runs_never_arm_an_unverified_slot_and_end_at_most_once(actions):
    world = World()
    for action in actions:
        step(world, action)
    assert all(digest == GOOD for digest in world.armed_with)
    assert len(world.terminal) <= 1
    if world.armed_with:
        assert world.phase in (Phase.REBOOTING, Phase.FINISHED)


def test_a_tampered_slot_after_the_proof_of_another_run_is_not_armed():
    """The issue's sequence, in the model: proven, restarted, rewritten, never re-proven."""
    world = World()
    for action in ("download", "prove", "install", "restart", "tamper", "arm"):
        step(world, action)
    assert world.armed_with == [] and world.phase is Phase.INSTALLING
    step(world, "prove")
    assert world.phase is Phase.FINISHED
    assert world.terminal == [Status.INSTALL_VERIFICATION_FAILED]


# --- found by mutation testing (tests/mutation, issue #10) -------------------------------


@pytest.mark.parametrize("phase", sorted(set(Phase) - {Phase.INSTALLING}))
def test_arming_is_refused_in_every_phase_but_installing(phase):
    """Phases are strings too: a check that compared them by order instead of identity would
    let `download-scheduled` (sorted before `installing`) arm with a good proof."""
    assert "arming in phase" in (arming_refusal(Proof(7, "aa", "aa"), 7, phase) or "")


def test_arming_compares_the_proof_by_value_not_by_identity():
    """Tokens past 256 and digests computed at run time are equal but distinct objects: a
    proof of this run over this digest must still allow arming (an identity check would
    refuse every update once a daemon had handed out 256 tokens)."""
    digest = hashlib.sha256(b"image").hexdigest()
    proof = Proof(int("1000"), digest, hashlib.sha256(b"image").hexdigest())
    assert proof.slot_digest is not proof.verified_digest
    assert arming_refusal(proof, int("1000"), Phase.INSTALLING) is None


def test_a_proof_cannot_be_altered_once_gathered():
    """The runner holds the proof in memory; nothing may mend it into agreement later."""
    proof = Proof(7, "aa", "bb")
    with pytest.raises(dataclasses.FrozenInstanceError):
        proof.slot_digest = "aa"  # type: ignore[misc]


@pytest.mark.parametrize(("verified", "slot"), [("aa", "bb"), ("bb", "aa")])
def test_a_slot_digest_either_side_of_the_verified_one_is_refused(verified, slot):
    """Digests are compared for equality, not order: a slot hash that sorts before the
    verified one is as wrong as one that sorts after."""
    assert "does not hold" in (arming_refusal(Proof(7, verified, slot), 7, Phase.INSTALLING) or "")


def test_the_table_cannot_be_edited_at_run_time():
    """`TRANSITIONS` is the whole flow; a row changed in memory would change the flow
    without a trace in the code."""
    row = advance(Phase.INSTALLING, Event.TRIAL_ARMED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.target = Phase.FINISHED  # type: ignore[misc]
