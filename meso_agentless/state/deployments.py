"""Job versions and deployments in the store (SQLite and PostgreSQL alike: portable statements).

Every spec a job has had is a numbered version (`job_versions`, with when and by whom it was
submitted); `jobs.spec_version` is the latest. A deployment moves a running service from one
version to another; its row (state, promoted) is all a restarted controller needs to resume
it, since each attempt carries the version it runs (`tasks.job_version`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RUNNING, WAITING, SUCCESSFUL, FAILED, CANCELLED = (
    "running", "waiting", "successful", "failed", "cancelled",
)  # fmt: skip
ACTIVE_STATES = (RUNNING, WAITING)


@dataclass(frozen=True, slots=True)
class VersionRow:
    job: str
    version: int
    spec: dict
    submitted: float
    submitter: str | None


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    id: int
    job: str
    from_version: int
    to_version: int
    state: str  # running, waiting (for a promote), successful, failed, cancelled
    promoted: bool
    revert: bool  # it goes back to an earlier version (auto_revert, `meso revert`)
    reason: str | None
    started: float
    updated: float
    version: int

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class DeploymentTables:
    """Mixed into state.sqlite.Store (and so PgStore): `db`, `clock` and `transaction` are
    the store's."""

    db: Any
    clock: Any
    transaction: Any

    def record_version(self, job: str, spec: dict, submitter: str | None = None) -> int:
        """Store `spec` as the job's next version unless it is its latest already; the
        latest version's number."""
        with self.transaction():
            last = self.db.execute(
                "SELECT version, spec FROM job_versions WHERE job = ? "
                "ORDER BY version DESC LIMIT 1",
                (job,),
            ).fetchone()
            if last is not None and json.loads(last["spec"]) == spec:
                number = last["version"]
            else:
                number = 1 if last is None else last["version"] + 1
                self.db.execute(
                    "INSERT INTO job_versions (job, version, spec, submitted, submitter) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (job, number, json.dumps(spec), self.clock(), submitter),
                )
            self.db.execute(
                "UPDATE jobs SET spec_version = ? WHERE name = ? AND spec_version != ?",
                (number, job, number),
            )
        return number

    def versions(self, job: str) -> list[VersionRow]:
        rows = self.db.execute("SELECT * FROM job_versions WHERE job = ? ORDER BY version", (job,))
        return [_version(r) for r in rows]

    def job_version(self, job: str, version: int) -> VersionRow | None:
        row = self.db.execute(
            "SELECT * FROM job_versions WHERE job = ? AND version = ?", (job, version)
        ).fetchone()
        return None if row is None else _version(row)

    def put_deployment(
        self, job: str, from_version: int, to_version: int, revert: bool = False
    ) -> DeploymentRow:
        """Start a deployment; one still under way for the job is cancelled (superseded)."""
        now = self.clock()
        with self.transaction():
            self.db.execute(
                "UPDATE deployments SET state = ?, reason = ?, updated = ?, "
                "version = version + 1 WHERE job = ? AND state IN (?, ?)",
                (CANCELLED, f"superseded by version {to_version}", now, job, *ACTIVE_STATES),
            )
            self.db.execute(
                "INSERT INTO deployments (job, from_version, to_version, state, promoted, "
                "revert, started, updated) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                (job, from_version, to_version, RUNNING, int(revert), now, now),
            )
            found = self.deployment(job)
        assert found is not None  # noqa: S101 - just written, in this transaction
        return found

    def deployment(self, job: str) -> DeploymentRow | None:
        """The job's latest deployment."""
        row = self.db.execute(
            "SELECT * FROM deployments WHERE job = ? ORDER BY id DESC LIMIT 1", (job,)
        ).fetchone()
        return None if row is None else _deployment(row)

    def active_deployments(self) -> list[DeploymentRow]:
        rows = self.db.execute(
            "SELECT * FROM deployments WHERE state IN (?, ?) ORDER BY id", ACTIVE_STATES
        )
        return [_deployment(r) for r in rows]

    def update_deployment(
        self,
        row: DeploymentRow,
        *,
        state: str | None = None,
        promoted: bool | None = None,
        reason: str | None = None,
    ) -> DeploymentRow | None:
        """Compare-and-set on the row's version: the new row, or None if it changed."""
        done = self.db.execute(
            "UPDATE deployments SET state = COALESCE(?, state), "
            "promoted = COALESCE(?, promoted), reason = COALESCE(?, reason), updated = ?, "
            "version = version + 1 WHERE id = ? AND version = ?",
            (state, None if promoted is None else int(promoted), reason, self.clock(), row.id,
             row.version),
        )  # fmt: skip
        if done.rowcount != 1:
            return None
        found = self.db.execute("SELECT * FROM deployments WHERE id = ?", (row.id,)).fetchone()
        return _deployment(found)


def _version(row: Any) -> VersionRow:
    return VersionRow(row["job"], row["version"], json.loads(row["spec"]), row["submitted"],
                      row["submitter"])  # fmt: skip


def _deployment(row: Any) -> DeploymentRow:
    return DeploymentRow(
        row["id"], row["job"], row["from_version"], row["to_version"], row["state"],
        bool(row["promoted"]), bool(row["revert"]), row["reason"], row["started"],
        row["updated"], row["version"],
    )  # fmt: skip
