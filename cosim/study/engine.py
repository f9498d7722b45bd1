"""Running a study: plan the variants, run each as one task (in-process or on Dask), record, resume, finish.

:class:`StudyRunner` is the small Python API the command line uses and a REST API can use as well:
``StudyRunner(loaded, out_dir, workers=2).run()`` blocks; ``start()`` runs it in a thread and ``status()``,
``cancel()`` and ``table()`` follow it from another. Every variant is one task (:func:`cosim.study.task.run_variant`);
the data files go to the workers once as a bundle (:mod:`cosim.study.variants`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from cosim.study import store as store_mod
from cosim.study.search import Bisection
from cosim.study.selectors import selected
from cosim.study.spec import LoadedStudy
from cosim.study.task import TaskOptions, forget_stop, request_stop, run_variant
from cosim.study.variants import BaseDocument, Bundle, Variant, check, document, portable_text
from cosim.study.sampling import Domain, full_grid, sample

if TYPE_CHECKING:
    import pandas as pd
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)
#: variants validated in full (scenario model + semantics) before anything runs; larger plans check a subset
CHECK_ALL_UP_TO = 64
#: after a cancel, seconds to wait for running Dask variants to come back as "cancelled" (each stops within a step)
STOP_WAIT_S = 30.0


# ---------------------------------------------------------------------------------------------- pools
class InlinePool:
    """``--workers 0``: every task in this process, one after the other, no Dask (for debugging)."""

    workers = 0

    def __init__(self, bundle: Bundle, stop_key: str) -> None:
        self.bundle = bundle
        self.stop_key = stop_key
        self.queue: deque[tuple[str, str, TaskOptions]] = deque()
        self.stopping = False

    def submit(self, vid: str, text: str, options: TaskOptions) -> None:
        self.queue.append((vid, text, options))

    @property
    def pending(self) -> int:
        return len(self.queue)

    def wait_one(self, timeout: float) -> list[dict[str, Any]]:
        """Run the next variant, in a thread of this process so that Ctrl-C reaches the study here and not the
        co-simulation's own handler (which would take a request arriving just before a run's end and drop it).
        The first Ctrl-C lets the running variant finish and be recorded, then the study stops (``stopping``);
        a second one stops at once."""
        if not self.queue:
            return []
        vid, text, options = self.queue.popleft()
        box: dict[str, Any] = {}

        done = threading.Event()  # not Thread.is_alive(): a join interrupted by Ctrl-C can report a live thread dead

        def work() -> None:
            try:
                box["result"] = run_variant(self.bundle.token, dict(self.bundle.files), vid, text, options,
                                            self.stop_key)
            finally:
                done.set()

        thread = threading.Thread(target=work, name=f"variant-{vid}", daemon=True)
        thread.start()
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            from cosim.console import err_console

            err_console.print(f"stopping after variant {vid} (Ctrl-C again to stop at once)")
            self.stopping = True
            while not done.wait(0.2):
                pass
        return [box.get("result") or {"id": vid, "status": "lost", "error": "the variant's thread ended without "
                                      "a result"}]

    def stop(self, timeout: float) -> list[dict[str, Any]]:
        """Drop the queue; the running variant (if any) saw the stop flag of :meth:`StudyRunner.cancel` and was
        recorded by :meth:`wait_one` already."""
        self.queue.clear()
        return []

    def close(self) -> None:
        forget_stop(self.stop_key)


#: Dask worker settings for co-simulations: its statistical profiler (a stack sample every 10 ms), the event-loop
#: health tick (every 20 ms) and the monitors (every 100-500 ms) run on the worker's loop thread and take the GIL
#: from the variant. Measured on the tiny study: the worker's other threads used 13.8 % of the variant's CPU time
#: with the defaults, 5.6 % with these (5.2 % in-process; a study of N workers on N cores pays it in speed-up).
#: For `dask worker` processes of a remote cluster the same keys go in their Dask config (docs/studies.md).
QUIET_WORKER = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                "distributed.admin.system-monitor.interval": "2s",
                "distributed.worker.memory.monitor-interval": "1s"}


def local_cluster(workers: int) -> Any:
    """A LocalCluster for co-simulations: ``workers`` processes of one thread (a co-simulation is CPU-bound Python;
    two threads would share the GIL), quiet (:data:`QUIET_WORKER`), bound to 127.0.0.1 only."""
    import dask
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO and shutdown lines would bury the bar
    # the nannies hand the config to the workers they start (restarted ones too); Ctrl-C is the study's own
    with dask.config.set({**QUIET_WORKER, "distributed.worker.preload": ["cosim.study.worker_setup"]}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,  # type: ignore[no-untyped-call]  # dask.distributed ships partial annotations
                            dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, host="127.0.0.1")


class DaskPool:
    """Tasks on Dask distributed: a LocalCluster of ``workers`` processes, or the scheduler at ``scheduler``."""

    def __init__(self, bundle: Bundle, stop_key: str, workers: int | None = None,
                 scheduler: str | None = None) -> None:
        from distributed import Client

        logging.getLogger("distributed").setLevel(logging.ERROR)  # its INFO and shutdown lines would bury the bar
        self.bundle = bundle
        self.stop_key = stop_key
        self.cluster = None
        if scheduler:
            self.client = Client(scheduler, timeout="20s")  # type: ignore[no-untyped-call]  # dask.distributed ships partial annotations
        else:
            self.cluster = local_cluster(workers or 1)
            self.client = Client(self.cluster)  # type: ignore[no-untyped-call]  # dask.distributed ships partial annotations
        self.workers = len(self.client.scheduler_info().get("workers", {}))
        self.scattered: dict[str, Any] = {}
        self.futures: dict[Any, str] = {}

    def _files(self) -> Any:
        """The bundle on every worker, sent once per content (an axis over a file path may add files later)."""
        token = self.bundle.token
        if token not in self.scattered:
            [self.scattered[token]] = self.client.scatter([dict(self.bundle.files)], broadcast=True, hash=False)  # type: ignore[no-untyped-call]  # dask.distributed ships partial annotations
        return self.scattered[token]

    def submit(self, vid: str, text: str, options: TaskOptions) -> None:
        fut = self.client.submit(run_variant, self.bundle.token, self._files(), vid, text, options, self.stop_key,
                                 pure=False, key=f"variant-{vid}-{uuid.uuid4().hex[:8]}")
        self.futures[fut] = vid

    @property
    def pending(self) -> int:
        return len(self.futures)

    def wait_one(self, timeout: float) -> list[dict[str, Any]]:
        from distributed import wait

        if not self.futures:
            return []
        try:
            done, _ = wait(list(self.futures), timeout=timeout, return_when="FIRST_COMPLETED")  # type: ignore[no-untyped-call]  # dask.distributed ships partial annotations
        except TimeoutError:
            return []
        out = []
        for fut in done:
            vid = self.futures.pop(fut)
            if fut.status == "finished":
                out.append(fut.result())
            else:  # the worker died or the task was cancelled: not a result of the variant, it runs again on resume
                try:
                    exc = fut.exception()
                except Exception as e:  # cancelled futures raise here
                    exc = e
                out.append({"id": vid, "status": "lost", "error": f"{type(exc).__name__}: {exc}"})
        return out

    def warm(self, text: str, options: TaskOptions) -> None:
        """Run one variant on every worker and drop the result, so timings measure variants, not the first
        imports and compilations of each process (a benchmark's warm-up; the direct baseline gets one too).
        A task pinned to each worker, not ``Client.run``: that runs on the worker's event loop, where the
        co-simulation's own loop cannot run -- the warm-up then failed at once and warmed nothing."""
        from distributed import wait

        futures = [self.client.submit(run_variant, self.bundle.token, self._files(), "warm-up", text, options,
                                      pure=False, workers=[addr], allow_other_workers=False,
                                      key=f"warm-up-{uuid.uuid4().hex[:8]}")
                   for addr in self.client.scheduler_info().get("workers", {})]
        wait(futures)  # type: ignore[no-untyped-call]  # dask.distributed ships partial annotations
        failed = [f.result().get("error") for f in futures if f.result().get("status") != "complete"]
        if failed:
            raise RuntimeError(f"the warm-up variant failed: {failed[0]}")

    def stop(self, timeout: float) -> list[dict[str, Any]]:
        """Set the study's stop flag on every worker: running variants end within one step and come back as
        "cancelled", queued ones at once; what has not come back within ``timeout`` is cancelled on the scheduler
        (Dask cannot interrupt a running task; its worker thread then finishes it unseen)."""
        if not self.futures:
            return []
        out: list[dict[str, Any]] = []
        try:
            self.client.run(request_stop, self.stop_key)
            deadline = time.monotonic() + timeout
            while self.futures and time.monotonic() < deadline:
                out += self.wait_one(timeout=max(0.05, deadline - time.monotonic()))
        finally:
            if self.futures:
                self.client.cancel(list(self.futures))  # type: ignore[no-untyped-call]  # dask.distributed ships partial annotations
                self.futures.clear()
        return out

    def close(self) -> None:
        try:
            try:
                self.client.run(forget_stop, self.stop_key)
            finally:
                self.client.close()  # type: ignore[no-untyped-call]  # dask.distributed ships partial annotations
        finally:
            if self.cluster is not None:
                self.cluster.close()


# ---------------------------------------------------------------------------------------------- status
@dataclass
class Status:
    state: str = "planned"  # planned | running | complete | interrupted | failed
    total: int = 0
    done: int = 0
    failed: int = 0
    cached: int = 0
    lost: int = 0
    cancelled: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    durations: list[float] = field(default_factory=list)

    def eta_s(self, workers: int) -> float | None:
        left = self.total - self.done - self.failed - self.cached
        if not self.durations or left <= 0:
            return 0.0 if left <= 0 else None
        mean = sum(self.durations) / len(self.durations)
        return left * mean / max(workers, 1)

    def as_dict(self, workers: int = 1) -> dict[str, Any]:
        return {"state": self.state, "total": self.total, "done": self.done, "failed": self.failed,
                "cached": self.cached, "lost": self.lost, "cancelled": self.cancelled,
                "eta_s": self.eta_s(workers), "error": self.error,
                "elapsed_s": None if self.started is None else (self.finished or time.time()) - self.started}


# ---------------------------------------------------------------------------------------------- runner
class StudyRunner:
    def __init__(self, loaded: LoadedStudy, out_dir: str | Path, *, workers: int | None = 1,
                 scheduler: str | None = None, resume: bool = False, warm: bool = False) -> None:
        self.ls = loaded
        self.study = loaded.study
        self.out = Path(out_dir)
        self.workers = workers
        self.scheduler = scheduler
        self.resume = resume
        self.warm = warm
        self.base = BaseDocument.read(loaded.scenario_path, self.study.scenario.variant)
        self.base_dir = loaded.scenario_path.parent
        self.status = Status()
        self.store = store_mod.ResultStore(self.out)
        self.results: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # variant ids in plan (and search) order
        self.variants: dict[str, Variant] = {}
        self.searches: list[Bisection] = []
        self._by_text: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self.stop_key = f"study-{uuid.uuid4().hex}"  # the variants' stop flag (cosim.study.task.request_stop)
        self._thread: threading.Thread | None = None
        self._pool: InlinePool | DaskPool | None = None
        self.bundle = Bundle()
        self.on_result: Callable[[dict[str, Any]], None] | None = None
        self.timing: dict[str, float] = {}

    # -- planning ----------------------------------------------------------------------------------
    def domains(self, names: list[str] | None = None) -> list[Domain]:
        out = []
        for axis in self.study.axes:
            if names is not None and axis.name not in names:
                continue
            r = axis.range
            values = axis.domain_values
            out.append(Domain(axis.name, tuple(values) if values is not None else None,
                              None if r is None else r.low, None if r is None else r.high,
                              None if r is None else r.num, bool(r and r.integer)))
        return out

    def plan(self) -> list[Variant]:
        """The variants of a plan (without a search); a search adds its variants as it goes."""
        study = self.study
        if study.search is not None:
            others = [a.name for a in study.axes if a.name != study.search.axis]
            combos = full_grid(self.domains(others)) if others else [{}]
            s = study.search
            self.searches = [Bisection(c, s.axis, s.low, s.high, s.tolerance, s.find) for c in combos]
            return []
        points = sample(self.domains(), study.plan.kind, study.plan.samples, study.plan.seed)
        return [Variant.make(p) for p in points]

    def check(self, variants: list[Variant]) -> None:
        """Validate variants before anything runs (all of a small plan; the first and each axis' extremes of a
        larger one); ScenarioError naming the study file, the axis and the scenario's own message otherwise."""
        from cosim.scenario import ScenarioError

        subset = variants if len(variants) <= CHECK_ALL_UP_TO else self._extremes(variants)
        for v in subset:
            try:
                check(document(self.ls, self.base, v), self.base_dir)
            except ScenarioError as exc:
                detail = "; ".join(f"{p.key_path}: {p.message}" for p in exc.problems)
                raise self.ls.error(("axes",), f"variant {v.axes} is not a valid scenario: {detail}") from None

    def _extremes(self, variants: list[Variant]) -> list[Variant]:
        picked = {variants[0].id: variants[0]}
        for axis in self.study.axes:
            vals = [v.axes[axis.name] for v in variants]
            try:
                lo, hi = min(vals), max(vals)
            except TypeError:
                continue
            for target in (lo, hi):
                v = next(v for v in variants if v.axes[axis.name] == target)
                picked[v.id] = v
        return list(picked.values())

    # -- study directory ---------------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        info_path = self.out / store_mod.STUDY_JSON
        fingerprint = self.ls.fingerprint()
        if info_path.is_file():
            import json

            info = json.loads(info_path.read_text(encoding="utf-8"))
            if not self.resume:
                raise store_mod.StudyDirError(f"{self.out}: holds a study already; add --resume to complete it, "
                                              "or give another --out")
            if info.get("fingerprint") != fingerprint:
                raise store_mod.StudyDirError(f"{self.out}: the study file or its base scenario changed since "
                                              "this directory was started; --resume needs the same files")
            self.results = self.store.load()
        elif self.resume and self.out.is_dir() and any(self.out.iterdir()):
            raise store_mod.StudyDirError(f"{self.out}: not a study directory (no {store_mod.STUDY_JSON})")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "study.yaml").write_text(self.ls.text, encoding="utf-8")
        self._write_info("running", fingerprint)

    def _write_info(self, state: str, fingerprint: str | None = None) -> None:
        from cosim.run import versions

        store_mod.write_json(self.out / store_mod.STUDY_JSON, {
            "study": self.study.name, "study_file": str(self.ls.path), "scenario_file": str(self.ls.scenario_path),
            "fingerprint": fingerprint or self.ls.fingerprint(), "state": state,
            "status": self.status.as_dict(self._n_workers), "updated": dt.datetime.now().astimezone().isoformat(
                timespec="seconds"), "workers": self._n_workers, "scheduler": self.scheduler,
            "bundle_bytes": self.bundle.nbytes, "timing": self.timing, "versions": versions()})

    @property
    def _n_workers(self) -> int:
        return getattr(self._pool, "workers", None) or (self.workers or 0)

    # -- options per variant ----------------------------------------------------------------------
    def _options(self, v: Variant) -> TaskOptions:
        study = self.study
        kpis = list(study.kept_kpis)
        if study.economics is not None:
            kpis += [k for k in ("run.simulated_s", "grid.losses_kwh", "total.bill_eur",
                                 "devices.*.batt_throughput_kwh") if k not in kpis]
        keep: list[str] = []
        if selected(study.outputs.runs, v):
            keep = list(study.outputs.tables)
        if selected(study.report.heatmaps, v) and "buses" not in keep:
            keep.append("buses")
        return TaskOptions(tuple(kpis), tuple(keep),
                           study.lifetime.model_dump() if study.lifetime is not None else None)

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Run in a background thread (for an API); follow with :meth:`status_dict`, stop with :meth:`cancel`."""
        self._thread = threading.Thread(target=self._run_catching, name=f"study-{self.study.name}", daemon=True)
        self._thread.start()
        return self._thread

    def _run_catching(self) -> None:
        try:
            self.run()
        except Exception as exc:
            self.status.state, self.status.error = "failed", f"{type(exc).__name__}: {exc}"

    def cancel(self) -> None:
        """Stop the study: running variants end within one co-simulation step (recorded as cancelled; --resume
        runs them again), nothing new starts; the table and report are written from what finished."""
        self._stop.set()
        if self.status.state in ("planned", "running"):  # (a finished study has no flag left to set)
            request_stop(self.stop_key)  # the inline pool's variant runs here; Dask workers get it in stop()

    def status_dict(self) -> dict[str, Any]:
        return self.status.as_dict(self._n_workers)

    def table(self) -> pd.DataFrame:
        return store_mod.read_table(self.out)

    def run(self, progress: bool = False) -> Status:
        """Run every variant not finished yet; returns the final status (state ``complete`` or ``interrupted``)."""
        t0 = time.perf_counter()
        variants = self.plan()
        if len(variants) > self.study.max_variants:
            raise self.ls.error(("max_variants",), f"the plan has {len(variants)} variants, more than max_variants")
        self.check(variants or [Variant.make({**b.combo, b.axis: b.high}) for b in self.searches[:1]])
        self._prepare_dir()
        self.status.total = len(variants) + sum(b.max_probes for b in self.searches)
        self.status.state, self.status.started = "running", time.time()
        self.timing["plan_s"] = time.perf_counter() - t0
        todo: deque[Variant] = deque(variants)
        for b in self.searches:
            todo.extend(self._search_variant(b, x) for x in b.first())
        t_pool = time.perf_counter()
        bar = _Bar(self.status, show=progress)
        try:
            with bar:
                self._pool = self._make_pool()
                self.timing["pool_start_s"] = time.perf_counter() - t_pool
                if self.warm and hasattr(self._pool, "warm") and todo:
                    t_w = time.perf_counter()
                    first = todo[0]
                    self._pool.warm(portable_text(document(self.ls, self.base, first), self.base_dir, self.bundle),
                                    self._options(first))
                    self.timing["warm_s"] = time.perf_counter() - t_w
                t_run, cpu_run = time.perf_counter(), time.process_time()
                self._loop(todo, bar)
                self.timing["run_s"] = time.perf_counter() - t_run
                self.timing["run_cpu_s"] = time.process_time() - cpu_run  # this process: client (+ scheduler)
            self.status.state = "interrupted" if self._stop.is_set() else "complete"
        except KeyboardInterrupt:
            self.status.state = "interrupted"
        finally:
            if self._pool is not None:
                try:
                    for result in self._pool.stop(timeout=STOP_WAIT_S):  # record what the stop ended
                        self._handle(result, todo, fresh=True)
                except KeyboardInterrupt:  # another Ctrl-C: leave at once
                    pass
                except Exception:  # e.g. a lost scheduler: what finished is still written below
                    log.exception("stopping the study's tasks failed")
                finally:
                    self._pool.close()
            self.status.finished = time.time()
            self.finish()
        return self.status

    def _make_pool(self) -> InlinePool | DaskPool:
        if self.scheduler is None and not self.workers:
            return InlinePool(self.bundle, self.stop_key)
        return DaskPool(self.bundle, self.stop_key, self.workers, self.scheduler)

    def _search_variant(self, b: Bisection, value: float) -> Variant:
        return Variant.make({**b.combo, b.axis: value}, origin="search")

    def _submit_or_reuse(self, v: Variant, ready: deque[dict[str, Any]]) -> None:
        if v.id not in self.variants:
            self.variants[v.id] = v
            self.order.append(v.id)
        if v.id in self.results:
            self.status.cached += 1
            ready.append(self.results[v.id])
            return
        text = portable_text(document(self.ls, self.base, v), self.base_dir, self.bundle)
        options = self._options(v)
        twin = self._by_text.setdefault(text + repr(options), [])
        twin.append(v.id)
        if len(twin) == 1:  # variants that differ only in economics.* axes share one simulation
            assert self._pool is not None  # started by run()
            self._pool.submit(v.id, text, options)

    def _loop(self, todo: deque[Variant], bar: _Bar) -> None:
        ready: deque[dict[str, Any]] = deque()
        submitted: set[str] = set()

        def feed_all() -> None:
            while todo:
                v = todo.popleft()
                if v.id in submitted:
                    continue
                submitted.add(v.id)
                self._submit_or_reuse(v, ready)

        feed_all()
        while not self._stop.is_set():
            if ready:
                self._handle(ready.popleft(), todo, fresh=False)
                feed_all()
                bar.update()
                continue
            assert self._pool is not None  # started by run()
            if self._pool.pending == 0:
                break
            for result in self._pool.wait_one(timeout=0.5):
                self._handle(result, todo, fresh=True)
            if getattr(self._pool, "stopping", False):
                self._stop.set()
                break
            feed_all()
            bar.update()

    def _handle(self, result: dict[str, Any], todo: deque[Variant], fresh: bool) -> None:
        if fresh:
            twins = next((ids for ids in self._by_text.values() if ids and ids[0] == result["id"]), [result["id"]])
            for other in twins[1:]:
                copy = {k: v for k, v in result.items() if k not in ("tables", "traceback")} | {"id": other}
                self._handle_one(copy, todo, fresh)
        self._handle_one(result, todo, fresh)

    def _handle_one(self, result: dict[str, Any], todo: deque[Variant], fresh: bool) -> None:
        vid = result["id"]
        v = self.variants.get(vid)
        if result["status"] == "lost":
            self.status.lost += 1
            log.warning("variant %s lost (%s); it runs again with --resume", vid, result.get("error"))
            self._feed_search(v, None, todo)
            return
        if result["status"] == "cancelled":  # recorded (results.jsonl, table) but not reused: --resume runs it
            assert v is not None  # every result is of a planned variant
            self.status.cancelled += 1
            row = {"id": vid, "axes": v.axes, "origin": v.origin, **result}
            row.pop("tables", None)
            self.store.append(row)
            self.results[vid] = row
            return
        if fresh:
            tables = result.pop("tables", {}) or {}
            if tables:
                self.store.save_tables(vid, tables)
            tb = result.pop("traceback", None)
            if tb:
                self.store.save_error(vid, tb)
            assert v is not None  # every result is of a planned variant
            row = {"id": vid, "axes": v.axes, "origin": v.origin, **result}
            self.store.append(row)
            self.results[vid] = row
            if result.get("wall_s"):
                self.status.durations.append(result["wall_s"])
            if result["status"] == "complete":
                self.status.done += 1
            else:
                self.status.failed += 1
        if self.on_result is not None:
            self.on_result(self.results[vid])
        met = None
        if self.results[vid]["status"] == "complete":
            met = self._meets(self.results[vid]["kpis"], self.study.search.meets if self.study.search else [])
        self._feed_search(v, met, todo)

    def _meets(self, kpis: dict[str, Any], names: list[str]) -> bool | None:
        verdicts = [t.met(kpis.get(t.kpi)) for t in self.study.targets if t.name in names]
        if any(x is None for x in verdicts):
            return False  # a KPI that could not be computed does not meet a target
        return all(verdicts)

    def _feed_search(self, v: Variant | None, met: bool | None, todo: deque[Variant]) -> None:
        if v is None or v.origin != "search":
            return
        s = self.study.search
        assert s is not None  # search variants exist only with a search
        combo = {k: val for k, val in v.axes.items() if k != s.axis}
        for b in self.searches:
            if b.combo == combo and not b.done:
                for x in b.feed(v.axes[s.axis], met):
                    todo.append(self._search_variant(b, x))
                if b.done:  # fewer probes than the upper bound
                    used = sum(1 for vid in self.order if self.variants[vid].origin == "search"
                               and {k: val for k, val in self.variants[vid].axes.items() if k != s.axis} == combo)
                    self.status.total -= b.max_probes - used

    # -- the end -----------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One flat row per finished variant: axes, KPIs, targets, economics."""
        from cosim.study.tables import flat_rows

        return flat_rows(self)

    def finish(self) -> None:
        """Write the table, the search results and the report from whatever finished (also after Ctrl-C)."""
        rows = self.rows()
        if rows:
            store_mod.write_table(self.out, rows)
            if self.searches:
                from cosim.study.tables import search_rows

                store_mod.write_table(self.out, search_rows(self), store_mod.SEARCH_TABLE, "search")
            try:
                from cosim.study.report import render

                render(self)
            except Exception:  # the table is the result; a report that cannot be drawn must not lose it
                log.exception("study report failed")
        self._write_info(self.status.state)


class _Bar:
    """The progress bar: variants done / failed / total and the ETA (rich)."""

    def __init__(self, status: Status, show: bool) -> None:
        self.status = status
        self.show = show
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _Bar:
        if self.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("[green]{task.fields[done]} done [red]{task.fields[failed]} failed"
                                                 "[/] {task.fields[cached]} reused"),
                                      TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("study", total=self.status.total, done=0, failed=0, cached=0)
        return self

    def update(self) -> None:
        if self._progress is not None:
            assert self._task is not None  # added with the bar
            s = self.status
            self._progress.update(self._task, total=s.total, completed=s.done + s.failed + s.cached,
                                  done=s.done, failed=s.failed, cached=s.cached)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self.update()
            self._progress.stop()


__all__ = ["DaskPool", "InlinePool", "Status", "StudyRunner", "selected"]
