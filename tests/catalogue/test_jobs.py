"""Job rows are the truth: exclusive claims, leases that expire, retries with backoff, bounded attempts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from allmicro_data import jobs
from allmicro_data.catalogue.models import Job, JobKind, JobStatus, utcnow


def _queue(services: Any, max_attempts: int = 3) -> str:
    with services.session() as session:
        return jobs.enqueue(session, JobKind.INGEST, max_attempts=max_attempts).id


def _job(services: Any, job_id: str) -> Job:
    with services.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_only_one_runner_claims_a_job(services: Any) -> None:
    job_id = _queue(services)
    first = jobs.claim(services.sessions, "runner-a", 30)
    second = jobs.claim(services.sessions, "runner-b", 30)
    assert first == job_id
    assert second is None
    job = _job(services, job_id)
    assert job.status is JobStatus.RUNNING
    assert job.lease_owner == "runner-a"
    assert job.attempts == 1
    assert not jobs.renew(services.sessions, job_id, "runner-b", 30)
    assert jobs.renew(services.sessions, job_id, "runner-a", 30, progress=42.0)
    assert _job(services, job_id).progress == 42.0


def test_expired_lease_puts_the_job_back_until_attempts_run_out(services: Any) -> None:
    job_id = _queue(services, max_attempts=2)
    assert jobs.claim(services.sessions, "dead-1", 1) == job_id
    later = utcnow() + timedelta(seconds=5)
    assert jobs.reap_expired(services.sessions, now=later) == 1
    assert _job(services, job_id).status is JobStatus.QUEUED
    assert jobs.claim(services.sessions, "dead-2", 1) == job_id
    assert _job(services, job_id).attempts == 2
    # The first owner's late report does not count: its lease is gone.
    assert not jobs.succeed(services.sessions, job_id, "dead-1")
    assert jobs.reap_expired(services.sessions, now=later + timedelta(seconds=5)) == 1
    job = _job(services, job_id)
    assert job.status is JobStatus.FAILED
    assert "stopped before finishing" in (job.error or "")
    assert jobs.claim(services.sessions, "runner", 30) is None


def test_live_leases_are_not_reaped(services: Any) -> None:
    job_id = _queue(services)
    jobs.claim(services.sessions, "alive", 60)
    assert jobs.reap_expired(services.sessions) == 0
    assert _job(services, job_id).status is JobStatus.RUNNING


def test_transient_failure_retries_later_and_bad_input_fails_at_once(services: Any) -> None:
    transient = _queue(services)
    assert jobs.claim(services.sessions, "r", 30) == transient
    assert jobs.fail(services.sessions, transient, "r", "store unreachable", transient=True)
    job = _job(services, transient)
    assert job.status is JobStatus.QUEUED
    assert job.not_before is not None and job.not_before > utcnow()
    assert job.error == "store unreachable"
    # Backing off: not claimable yet.
    assert jobs.claim(services.sessions, "r", 30) is None

    bad = _queue(services)
    assert jobs.claim(services.sessions, "r", 30) == bad
    assert jobs.fail(services.sessions, bad, "r", "not a TIFF", transient=False)
    job = _job(services, bad)
    assert job.status is JobStatus.FAILED
    assert job.error == "not a TIFF"
    assert job.finished_at is not None


def test_transient_failures_stop_after_max_attempts(services: Any) -> None:
    job_id = _queue(services, max_attempts=1)
    assert jobs.claim(services.sessions, "r", 30) == job_id
    jobs.fail(services.sessions, job_id, "r", "still unreachable", transient=True)
    assert _job(services, job_id).status is JobStatus.FAILED


def test_success_and_rerun(services: Any) -> None:
    job_id = _queue(services)
    jobs.claim(services.sessions, "r", 30)
    assert jobs.succeed(services.sessions, job_id, "r")
    job = _job(services, job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.progress == 100.0
    with services.session() as session:
        stored = session.get(Job, job_id)
        assert stored is not None
        jobs.rerun(session, stored)
    job = _job(services, job_id)
    assert job.status is JobStatus.QUEUED and job.attempts == 0
    assert jobs.claim(services.sessions, "r2", 30) == job_id
