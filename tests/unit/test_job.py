"""The persisted update job: generations, history, and building it from a request."""

from __future__ import annotations

import datetime
import json
import os
import threading

import pytest

from agent.config import FirmwareConfig
from agent.durable import StateWriteError
from agent.firmware.job import MAX_RETRIES, MAX_RETRY_INTERVAL, Job, JobStore, NotOwner
from agent.firmware.machine import Phase
from agent.ocpp import v16

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


def request(retrieve: datetime.datetime, **extra) -> v16.SignedUpdateFirmwareReq:
    firmware = v16.Firmware(
        location="https://fw.example/2.0.bin",
        retrieve_date_time=retrieve,
        signing_certificate="PEM",
        signature="c2ln",
    )
    return v16.SignedUpdateFirmwareReq(request_id=7, firmware=firmware, **extra)


def test_a_request_due_now_starts_downloading_with_the_configured_defaults():
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    assert (job.phase, job.attempt) == (Phase.DOWNLOADING, 1)
    assert (job.retries, job.retry_interval) == (3, 60)  # absent: config defaults


def test_a_later_request_is_scheduled_and_keeps_its_own_retry_values():
    later = NOW + datetime.timedelta(hours=1)
    job = Job.from_request(
        request(later, retries=0, retry_interval=5), FirmwareConfig(), now=NOW.timestamp()
    )
    assert (job.phase, job.attempt) == (Phase.DOWNLOAD_SCHEDULED, 0)
    assert (job.retries, job.retry_interval) == (0, 5)


def test_transitions_are_counted_and_recorded_with_the_boot_id_checkpoints_are_not(tmp_path):
    boots = iter(["boot-1", "boot-1", "boot-2"])
    store = JobStore(tmp_path, lambda: next(boots))
    token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, token)
    job.offset = 4096
    store.save(job, token, transition=False)
    job.phase = Phase.VERIFYING
    store.save(job, token)
    job.phase = Phase.REBOOTING
    store.save(job, token)
    loaded = JobStore(tmp_path).load()
    assert loaded is not None and loaded.transitions == 3 and loaded.offset == 4096
    assert [(phase, boot) for phase, boot, _ in loaded.history] == [
        ("downloading", "boot-1"),
        ("verifying", "boot-1"),
        ("rebooting", "boot-2"),
    ]


def block_writes(path) -> None:
    """Make the next atomic write of `path` fail, without root: a directory sits where its
    temporary file would go."""
    path.with_name(f".{path.name}.tmp-{os.getpid()}").mkdir()


def test_a_save_that_fails_is_not_counted_and_the_previous_generation_stays(tmp_path):
    """A full state dir: the transition is not counted in memory (retries on a full disk must
    not trip the crash-loop breaker) and `load` still finds the last saved generation."""
    store = JobStore(tmp_path, lambda: "boot-1")
    token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, token)
    block_writes(store.path)
    job.phase = Phase.VERIFYING
    for _ in range(3):
        with pytest.raises(StateWriteError, match="cannot write"):
            store.save(job, token)
    assert (job.transitions, len(job.history)) == (1, 1)
    loaded = JobStore(tmp_path).load()
    assert loaded is not None and (loaded.phase, loaded.transitions) == (Phase.DOWNLOADING, 1)


def test_a_torn_newest_generation_falls_back_to_the_previous_one(tmp_path):
    store = JobStore(tmp_path)
    token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, token)
    job.phase = Phase.VERIFYING
    store.save(job, token)
    (tmp_path / "job.json").write_bytes(b'{"version": 1, "job": {"request_id": 7, "pha')
    loaded = JobStore(tmp_path).load()
    assert loaded is not None and loaded.phase is Phase.DOWNLOADING  # the previous generation
    assert len(list(tmp_path.glob("job.json.broken-*"))) == 1  # kept for inspection


def test_an_unknown_phase_name_takes_the_safe_path(tmp_path):
    store = JobStore(tmp_path)
    token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, token)
    document = json.loads((tmp_path / "job.json").read_text())
    document["job"]["phase"] = "teleporting"
    (tmp_path / "job.json").write_text(json.dumps(document))
    assert JobStore(tmp_path).load() is None
    assert list(tmp_path.glob("job.json.broken-*"))


def test_a_revoked_owner_can_no_longer_save_and_the_file_stays_as_the_new_owner_left_it(
    tmp_path,
):
    """Issue #9: a worker still winding down after a cancel must never write job.json."""
    store = JobStore(tmp_path)
    old = store.ownership.claim()
    stale = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(stale, old)
    new = store.ownership.claim()
    fresh = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    fresh.request_id = 72
    store.save(fresh, new)
    before = store.path.read_bytes()
    stale.phase = Phase.INSTALLING
    with pytest.raises(NotOwner):
        store.save(stale, old)
    with pytest.raises(NotOwner):
        store.save(stale, old, transition=False)
    assert store.path.read_bytes() == before
    loaded = JobStore(tmp_path).load()
    assert loaded is not None and loaded.request_id == 72


@pytest.mark.parametrize(
    ("retries", "interval", "kept"),
    [
        (20, 60, (20, 60)),  # the breaker used to cut this to 16 attempts
        (10**9, 10**10, (MAX_RETRIES, MAX_RETRY_INTERVAL)),
        (-5, -1, (0, 0)),
    ],
)
def test_retry_values_are_kept_or_clamped_with_a_logged_reason(retries, interval, kept, caplog):
    job = Job.from_request(
        request(NOW, retries=retries, retry_interval=interval),
        FirmwareConfig(),
        now=NOW.timestamp(),
    )
    assert (job.retries, job.retry_interval) == kept
    clamped = kept != (retries, interval)
    assert ("out of range" in caplog.text) is clamped


# --- found by mutation testing (tests/mutation, issue #10) -------------------------------


def test_install_date_time_is_kept_as_epoch_seconds():
    firmware = v16.Firmware(
        location="https://fw.example/2.0.bin",
        retrieve_date_time=NOW,
        install_date_time=NOW + datetime.timedelta(hours=2),
        signing_certificate="PEM",
        signature="c2ln",
    )
    req = v16.SignedUpdateFirmwareReq(request_id=7, firmware=firmware)
    job = Job.from_request(req, FirmwareConfig(), now=NOW.timestamp())
    assert job.install_at == NOW.timestamp() + 7200
    assert Job.from_request(request(NOW), FirmwareConfig(), now=0).install_at is None


@pytest.mark.parametrize(("retries", "interval"), [(0, 0), (100, 86400)])
def test_the_bounds_themselves_are_kept_without_a_warning(retries, interval, caplog):
    """At most 100 retries and a day between attempts: the edges are in range."""
    job = Job.from_request(
        request(NOW, retries=retries, retry_interval=interval),
        FirmwareConfig(),
        now=NOW.timestamp(),
    )
    assert (job.retries, job.retry_interval) == (retries, interval)
    assert "out of range" not in caplog.text


def test_the_history_keeps_the_last_64_transitions_and_counts_them_all(tmp_path):
    """A job that loops (retries, resumes) must not grow its file without bound."""
    store = JobStore(tmp_path)
    token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    phases = [Phase.DOWNLOADING, Phase.VERIFYING] * 40
    for phase in phases:
        job.phase = phase
        store.save(job, token)
    loaded = JobStore(tmp_path).load()
    assert loaded is not None and loaded.transitions == 80
    assert len(loaded.history) == 64
    assert [phase for phase, _, _ in loaded.history] == [p.value for p in phases[-64:]]


def test_the_saved_document_is_version_1_and_a_version_1_document_loads(tmp_path):
    """The job file is an on-disk API across upgrades."""
    store = JobStore(tmp_path)
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, store.ownership.claim())
    document = json.loads((tmp_path / "job.json").read_text())
    assert document["version"] == 1 and document["job"]["phase"] == "downloading"
    (tmp_path / "job.json.prev").unlink(missing_ok=True)
    loaded = JobStore(tmp_path).load()
    assert loaded is not None and loaded == job


def test_a_job_file_with_unknown_fields_is_moved_aside(tmp_path):
    """Fields this version does not know mean a newer (or foreign) writer: not guessed at."""
    store = JobStore(tmp_path)
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, store.ownership.claim())
    document = json.loads((tmp_path / "job.json").read_text())
    document["job"]["teleport_to"] = "slot C"
    (tmp_path / "job.json").write_text(json.dumps(document))
    assert JobStore(tmp_path).load() is None
    assert len(list(tmp_path.glob("job.json.broken-*"))) == 1


def test_ownership_compares_tokens_by_value_past_256_claims(tmp_path):
    """A long-running daemon hands out many tokens; the current one must still save."""
    store = JobStore(tmp_path)
    for _ in range(300):
        token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, int(str(token)))
    assert JobStore(tmp_path).load() == job


def test_a_generation_that_cannot_be_kept_is_a_state_write_error(tmp_path):
    """Any OSError while keeping the previous generation (here a directory in its place)
    reaches the caller as StateWriteError, and the transition is not counted."""
    store = JobStore(tmp_path)
    token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, token)
    (tmp_path / "job.json.prev").mkdir()
    (tmp_path / "job.json.prev" / "occupied").touch()
    job.phase = Phase.VERIFYING
    with pytest.raises(StateWriteError, match="cannot keep"):
        store.save(job, token)
    assert job.transitions == 1


def test_a_document_without_the_progress_fields_starts_from_nothing(tmp_path):
    """A job file from before a field existed loads with its neutral value: no attempt
    started, no byte durable (a default offset past 0 would resume past bytes never written),
    no resume counted by the crash-loop breaker."""
    store = JobStore(tmp_path)
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    store.save(job, store.ownership.claim())
    document = json.loads((tmp_path / "job.json").read_text())
    del document["job"]["attempt"], document["job"]["offset"], document["job"]["resumes"]
    (tmp_path / "job.json").write_text(json.dumps(document))
    loaded = JobStore(tmp_path).load()
    assert loaded is not None and (loaded.attempt, loaded.offset, loaded.resumes) == (0, 0, 0)


def test_only_the_finished_phase_is_finished():
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    for phase in Phase:
        job.phase = phase
        assert job.finished is (phase is Phase.FINISHED)


def test_only_the_current_token_owns_the_job(tmp_path):
    """Neither a revoked token nor one never handed out may save."""
    store = JobStore(tmp_path)
    token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    for other in (token - 1, token + 1):
        with pytest.raises(NotOwner):
            store.save(job, other)
    assert not store.path.exists()


def test_a_retrieve_date_time_in_the_past_starts_the_download_now():
    job = Job.from_request(
        request(NOW - datetime.timedelta(days=1)), FirmwareConfig(), now=NOW.timestamp()
    )
    assert (job.phase, job.attempt) == (Phase.DOWNLOADING, 1)


def test_the_ownership_lock_is_the_one_every_save_holds(tmp_path):
    """The updater decides under `ownership.lock` (cancellable? armed?) while no owner may
    write; the lock is re-entrant, as arming saves while holding it."""
    store = JobStore(tmp_path)
    token = store.ownership.claim()
    job = Job.from_request(request(NOW), FirmwareConfig(), now=NOW.timestamp())
    taken: list[bool] = []
    with store.ownership.lock:
        store.save(job, token)
        other = threading.Thread(target=lambda: taken.append(store.ownership.lock.acquire(False)))
        other.start()
        other.join()
    assert taken == [False]


def test_one_past_the_bounds_is_clamped_to_100_retries_and_a_day():
    """The bounds are 100 retries and 86400 s between attempts, not the constants' names."""
    job = Job.from_request(
        request(NOW, retries=101, retry_interval=86401), FirmwareConfig(), now=NOW.timestamp()
    )
    assert (job.retries, job.retry_interval) == (100, 86400)
