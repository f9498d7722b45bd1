"""What the API holds: uploaded grids with their simulation, and study jobs, each bounded.

:class:`Limits` caps concurrent simulations and studies, in all and per user (a 429 with the reason and a
Retry-After beyond them), the number of grids and studies kept (the oldest finished ones make room; 429 if none is
finished), and the request body size.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ApiError
from .grids import StoredGrid
from .simulation import RunRequest, SimulationJob
from .studies import StudyJob, StudyRequest, scenario_info, submit

REPO_SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@dataclass
class Limits:
    max_body_bytes: int = 16 << 20
    max_running_simulations: int = 2
    max_running_studies: int = 1
    max_running_jobs_per_user: int = 2  # simulations + studies one user (login) runs at once
    max_grids: int = 50
    max_studies: int = 20
    max_study_variants: int = 64
    study_workers: int = 0  # 0: in this process (the engine's inline pool); N: one Dask LocalCluster of N
    study_scheduler: str | None = None  # an existing Dask scheduler (tcp://HOST:8786) instead of a LocalCluster


@dataclass
class Registry:
    folder: Path | None = None
    scenario_roots: list[Path] = field(default_factory=lambda: [REPO_SCENARIOS])
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self._own_folder = self.folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="s4g-api-")) if self.folder is None else Path(self.folder)
        self.grids: dict[str, SimulationJob] = {}
        self.studies: dict[str, StudyJob] = {}
        self._lock = threading.Lock()
        self._cluster: Any = None  # the LocalCluster every study shares (started with the first study)

    # -- grids and their simulation -------------------------------------------------------------------------
    def add_grid(self, grid: StoredGrid) -> SimulationJob:
        with self._lock:
            if len(self.grids) >= self.limits.max_grids:
                idle = [g for g in self.grids.values() if not g.running]
                if not idle:
                    grid.path.unlink(missing_ok=True)
                    raise ApiError(429, f"{self.limits.max_grids} grids are held and all are running")
                self._drop_grid(idle[0])
            job = SimulationJob(grid)
            self.grids[grid.id] = job
            return job

    def grid(self, gid: str) -> SimulationJob:
        job = self.grids.get(gid)
        if job is None:
            raise ApiError(404, f"no grid / simulation {gid!r}")
        return job

    def run(self, gid: str, req: RunRequest, user: str = "local") -> SimulationJob:
        with self._lock:
            job = self.grid(gid)
            if job.running:
                raise ApiError(409, f"simulation {gid} is running; abort it first")
            self._admit(user)
            running = [g for g in self.grids.values() if g.running]
            if len(running) >= self.limits.max_running_simulations:
                raise ApiError(429, f"{len(running)} simulations are running (the limit); try again when one ends",
                               retry_after(running))
            job.start(req, owner=user)
            return job

    def _admit(self, user: str) -> None:
        """429 when ``user`` runs as many jobs (simulations + studies) as the per-user quota allows."""
        jobs: list[SimulationJob | StudyJob] = [*self.grids.values(), *self.studies.values()]
        mine = [j for j in jobs if j.running and j.owner == user]
        quota = self.limits.max_running_jobs_per_user
        if len(mine) >= quota:
            raise ApiError(429, f"user {user!r} runs {len(mine)} jobs (simulations + studies), the per-user limit "
                                f"of {quota}; try again when one ends", retry_after(mine))

    def delete_grid(self, gid: str) -> None:
        with self._lock:
            self._drop_grid(self.grid(gid))

    def _drop_grid(self, job: SimulationJob) -> None:
        job.abort()
        self.grids.pop(job.grid.id, None)
        job.grid.path.unlink(missing_ok=True)

    # -- studies -------------------------------------------------------------------------------------------
    def submit_study(self, req: StudyRequest, user: str = "local") -> StudyJob:
        with self._lock:
            self._admit(user)
            running = [s for s in self.studies.values() if s.running]
            if len(running) >= self.limits.max_running_studies:
                raise ApiError(429, f"{len(running)} studies are running (the limit); try again when one ends",
                               retry_after(running))
            if len(self.studies) >= self.limits.max_studies:
                done = [s for s in self.studies.values() if not s.running]
                if not done:
                    raise ApiError(429, f"{self.limits.max_studies} studies are held")
                self.studies.pop(done[0].id)
                shutil.rmtree(done[0].folder, ignore_errors=True)
            job = submit(req, self.scenario_roots, self.folder / "studies",  # type: ignore[operator]
                         workers=self.limits.study_workers, scheduler=self._study_scheduler(),
                         max_variants=self.limits.max_study_variants)
            job.owner = user
            self.studies[job.id] = job
            return job

    def _study_scheduler(self) -> str | None:
        """Where studies run: the configured scheduler, else one LocalCluster started once and shared (its worker
        processes keep their imports and unpacked data between studies), else None (in this process)."""
        if self.limits.study_scheduler or not self.limits.study_workers:
            return self.limits.study_scheduler
        if self._cluster is None:
            from cosim.study.engine import local_cluster

            self._cluster = local_cluster(self.limits.study_workers)
        return str(self._cluster.scheduler_address)

    def study(self, sid: str) -> StudyJob:
        job = self.studies.get(sid)
        if job is None:
            raise ApiError(404, f"no study {sid!r}")
        return job

    def scenarios(self) -> list[str]:
        return sorted({p.name for r in self.scenario_roots for p in r.glob("*.yaml")})

    def scenario(self, name: str) -> dict[str, Any]:
        return scenario_info(name, self.scenario_roots)

    def close(self) -> None:
        """Stop every worker (abort simulations, cancel studies) and remove a folder this registry made."""
        for job in list(self.grids.values()):
            job.abort()
            job.wait(10)
        for s in list(self.studies.values()):
            s.runner.cancel()
            s.wait(60)
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)  # type: ignore[arg-type]


def retry_after(jobs: Sequence[SimulationJob | StudyJob]) -> dict[str, str]:
    """The Retry-After header for a 429: when the first of ``jobs`` should end by its ETA (1 s .. 1 h; 10 s when
    none can tell yet)."""
    etas = [e for e in (j.eta_s() for j in jobs) if e is not None and math.isfinite(e)]
    seconds = min(max(math.ceil(min(etas)), 1), 3600) if etas else 10
    return {"Retry-After": str(seconds)}
