"""Many bags on Ray (process-bags, compare-bags): finding the bags, the key that says a bag was
already done with this model and these parameters, the atomic result folder, the workers (a Ray
actor each, the model loaded once for all its bags), the progress line and the retries.

Ray is imported only here and only when a command runs: the vehicle's runtime set has no Ray.
No address: an embedded local Ray with this machine's cores; an address (or RAY_ADDRESS): an
existing cluster.

A result folder is DIR/<bag name>-<key>/: written in DIR/.partial/<id>/ and renamed into place
when it is complete, so it exists whole or not at all; a rerun skips the bags whose folder is
there and removes what an interrupted run left in .partial.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

PARTIAL = ".partial"
RESULT = "result.json"
HASHES = ".bag_hashes.json"   # content hashes by (path, size, mtime): a rerun does not read every bag again
RETRIES = 2                   # a bag whose worker died is tried again this often


# ----------------------------------------------------------------------------- bags

def find_bags(inputs: Sequence[str]) -> List[str]:
    """Every bag the inputs name: a bag (a rosbag2 folder or a .db3/.mcap file), a folder of
    bags (searched all the way down), a glob pattern, or a text file (.txt) of such paths, one a
    line. Sorted, each once."""
    found: List[str] = []

    def add(path: str) -> None:
        if _is_bag_dir(path) or (os.path.isfile(path) and path.endswith((".db3", ".mcap"))):
            found.append(os.path.realpath(path))
        elif os.path.isfile(path) and path.endswith(".txt"):
            base = os.path.dirname(os.path.abspath(path))
            for line in open(path, encoding="utf-8"):
                line = line.strip()
                if line and not line.startswith("#"):
                    add(line if os.path.isabs(line) else os.path.join(base, line))
        elif os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                if _is_bag_dir(root):
                    found.append(os.path.realpath(root))
                    dirs[:] = []  # a bag's own folder holds no other bag
                    continue
                found.extend(os.path.realpath(os.path.join(root, f)) for f in sorted(files)
                             if f.endswith((".db3", ".mcap")))
        elif glob.has_magic(path):
            for p in sorted(glob.glob(path)):
                add(p)
        else:
            raise FileNotFoundError(f"no bag, folder, pattern or list: {path}")

    for item in inputs:
        add(item)
    return sorted(dict.fromkeys(found))


def _is_bag_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "metadata.yaml"))


def bag_files(path: str) -> List[str]:
    if os.path.isdir(path):
        return sorted(os.path.join(path, f) for f in os.listdir(path)
                      if os.path.isfile(os.path.join(path, f)))
    return [path]


class ContentHashes:
    """sha256 of a bag's files (their bytes), remembered by path, size and mtime in DIR."""

    def __init__(self, out_dir: str) -> None:
        self.path = os.path.join(out_dir, HASHES)
        try:
            self.known: Dict[str, str] = json.load(open(self.path))
        except (OSError, ValueError):
            self.known = {}

    def of(self, bag: str) -> str:
        files = bag_files(bag)
        stamp = ";".join(f"{os.path.basename(f)}:{os.path.getsize(f)}:{os.stat(f).st_mtime_ns}" for f in files)
        key = f"{bag}|{stamp}"
        if key not in self.known:
            h = hashlib.sha256()
            for f in files:
                h.update(os.path.basename(f).encode())
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            self.known[key] = h.hexdigest()
        return self.known[key]

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.known, f)
        os.replace(tmp, self.path)


def job_key(bag_hash: str, model_hash: str, what: Dict[str, object]) -> str:
    """What a result depends on: the bag's content, the model file, the parameters and options."""
    h = hashlib.sha256()
    h.update(bag_hash.encode())
    h.update(model_hash.encode())
    h.update(json.dumps(what, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


def result_dir(out_dir: str, bag: str, key: str) -> str:
    name = os.path.basename(os.path.normpath(bag))
    for suffix in (".mcap", ".db3"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    return os.path.join(out_dir, f"{name}-{key}")


def clean_partial(out_dir: str) -> int:
    """Remove what an interrupted run left half-written; the number of folders removed."""
    partial = os.path.join(out_dir, PARTIAL)
    left = os.listdir(partial) if os.path.isdir(partial) else []
    for name in left:
        shutil.rmtree(os.path.join(partial, name), ignore_errors=True)
    return len(left)


def atomic_result(out_dir: str, final: str, make: Callable[[str], Dict[str, object]]) -> Dict[str, object]:
    """``make(tmp_dir)`` writes a result in a fresh folder under DIR/.partial; renamed to
    ``final`` when it returns (whole or not at all: removed when it raises). The files are on
    disk before the rename (a power cut leaves the old state or the whole result). A ``final``
    that holds no readable result (left by an older, broken run) is replaced; one that holds a
    result (another worker finished the same bag first) is kept and returned."""
    tmp = os.path.join(out_dir, PARTIAL, uuid.uuid4().hex)
    os.makedirs(tmp)
    try:
        result = make(tmp)
        with open(os.path.join(tmp, RESULT), "w") as f:
            json.dump(result, f, indent=1, default=str)
        _sync_tree(tmp)
        try:
            os.rename(tmp, final)  # one step on one file system: the result appears whole
        except OSError:
            if not os.path.isdir(final):
                raise
            earlier = done_result(final)
            if earlier is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                return earlier
            stale = os.path.join(out_dir, PARTIAL, "stale-" + uuid.uuid4().hex)
            os.rename(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, final)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class RunLock:
    """One fleet command at a time on a result folder (each removes what the other would be
    writing otherwise); refused with the reason, not waited for."""

    def __init__(self, out_dir: str) -> None:
        import fcntl

        self.file = open(os.path.join(out_dir, ".lock"), "w")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise RuntimeError(f"another process-bags or compare-bags is writing {out_dir}; wait for it "
                               "or choose another --out") from None

    def release(self) -> None:
        self.file.close()


def done_result(final: str) -> Optional[Dict[str, object]]:
    try:
        return json.load(open(os.path.join(final, RESULT)))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- Ray

def start_ray(address: Optional[str], cpus: Optional[int] = None):
    """ray, initialised: the cluster at ``address`` (or RAY_ADDRESS), else an embedded local one
    with this machine's cores."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("Ray is not installed: pip install -r requirements/fleet.txt") from exc
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                  ignore_reinit_error=True)
    if address is None:
        kwargs["num_cpus"] = cpus or os.cpu_count() or 1
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, embedded Ray: nothing to log in to
    # Ray starts its workers at nice 15: beside any other work (a training, the vehicle's own
    # software on its workstation) they got a tenth of a core here. The bags are the work asked
    # for: at the priority of the command that asked (RAY_worker_niceness=15 gives Ray's back).
    os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
    ray.init(address=address, **kwargs)
    return ray


@dataclasses.dataclass
class Job:
    bag: str
    final: str
    key: str
    tries: int = 0


class Pool:
    """``workers`` Ray actors of ``actor_class`` (each built with ``args``, ``resources`` per
    actor: num_cpus, num_gpus); jobs handed to whichever is free; a job whose actor died is
    tried again on a new actor (RETRIES times), then reported failed."""

    def __init__(self, ray, actor_class, args: tuple, workers: int, resources: Dict[str, float]) -> None:
        self.ray, self.args = ray, args
        self.remote = ray.remote(actor_class).options(**resources)
        self.actors = [self.remote.remote(*args) for _ in range(max(1, workers))]

    def run(self, jobs: List[Job], call: Callable, on_done: Callable[[Job, Dict[str, object]], None],
            poll: Callable[[], None] = lambda: None) -> None:
        ray = self.ray
        queue = list(jobs)
        busy: Dict[object, Tuple[Job, int]] = {}  # future -> (job, actor index)
        free = list(range(len(self.actors)))
        while queue or busy:
            while queue and free:
                i = free.pop(0)
                job = queue.pop(0)
                busy[call(self.actors[i], job)] = (job, i)
            ready, _ = ray.wait(list(busy), num_returns=1, timeout=0.5)
            poll()
            for fut in ready:
                job, i = busy.pop(fut)
                try:
                    result = ray.get(fut)
                except ray.exceptions.RayActorError as exc:  # the worker died (killed, out of memory)
                    try:  # one that is only unreachable must not finish the bag beside its replacement
                        ray.kill(self.actors[i], no_restart=True)
                    except Exception:
                        pass
                    self.actors[i] = self.remote.remote(*self.args)
                    job.tries += 1
                    if job.tries <= RETRIES:
                        queue.insert(0, job)
                    else:
                        on_done(job, {"status": "failed", "reason": f"its worker died {job.tries} times: {exc}"})
                    free.append(i)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    result = {"status": "failed", "reason": str(exc.cause if exc.cause else exc)}
                except ray.exceptions.RayError as exc:  # lost object, unschedulable, Ray itself
                    result = {"status": "failed", "reason": f"Ray: {type(exc).__name__}: {exc}"}
                free.append(i)
                on_done(job, result)

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:
                pass


class ProgressBoard:
    """The frames done of every bag in flight (an actor the workers report to, read by the
    driver's progress line)."""

    def __init__(self) -> None:
        self.frames: Dict[str, Tuple[int, int]] = {}

    def report(self, bag: str, done: int, total: int) -> None:
        self.frames[bag] = (done, total)

    def finished(self, bag: str) -> None:
        self.frames.pop(bag, None)

    def snapshot(self) -> Dict[str, Tuple[int, int]]:
        return dict(self.frames)


class FleetProgress:
    """One line: bags done of all, frames done (finished bags and those in flight), rate, ETA.
    The board lags the results a little: a finished bag's frames count once, and the line never
    goes back."""

    def __init__(self, bags: int, frames_total: int, stream=None, enabled: bool = True) -> None:
        from .common import Progress

        self.line = Progress(frames_total, "frames", label=f"bags 0/{bags}", stream=stream or sys.stderr,
                             enabled=enabled)
        self.bags, self.done_frames, self.shown = bags, 0, 0
        self.finished: set = set()

    def update(self, in_flight: Dict[str, Tuple[int, int]]) -> None:
        self.line.label = f"bags {len(self.finished)}/{self.bags}"
        now = self.done_frames + sum(d for bag, (d, _) in in_flight.items() if bag not in self.finished)
        self.shown = max(self.shown, now)
        self.line.update(self.shown)

    def bag_done(self, bag: str, frames: int) -> None:
        self.finished.add(bag)
        self.done_frames += frames

    def finish(self) -> None:
        self.line.label = f"bags {len(self.finished)}/{self.bags}"
        self.line.update(max(self.shown, self.done_frames))
        self.line.finish()


def bag_frames(bag: str) -> int:
    """Camera frames of a bag (for the progress line); 0 when it cannot be read (its job says why)."""
    from ...core import bagio

    try:
        with bagio.open_bag(bag) as reader:
            topics = reader.topics()
            return sum(i.count for i in topics.values() if i.msgtype in bagio.CAMERA_TYPES)
    except Exception:
        return 0


def iter_jsonl(path: str) -> Iterable[Dict[str, object]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def elapsed(t0: float) -> float:
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the driver

@dataclasses.dataclass
class FleetRun:
    """What a fleet command did: every bag's result (done now, done before, or failed with a
    reason), whether Ctrl-C stopped it, and how it ran."""
    results: Dict[str, Dict[str, object]]
    interrupted: bool = False
    seconds: float = 0.0
    removed_partial: int = 0
    workers: int = 0
    cluster: str = ""

    def with_status(self, status: str) -> List[str]:
        return [b for b, r in self.results.items() if r.get("status") == status]

    @property
    def done_now(self) -> List[str]:
        return [b for b, r in self.results.items() if r.get("status") == "done" and not r.get("earlier")]

    @property
    def done_before(self) -> List[str]:
        return [b for b, r in self.results.items() if r.get("status") == "done" and r.get("earlier")]

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return 130
        return 0 if all(r.get("status") == "done" for r in self.results.values()) else 1


def file_hashes(out_dir: str, files: Sequence[str]) -> Tuple[ContentHashes, str]:
    hashes = ContentHashes(out_dir)
    return hashes, "+".join(hashes.of(f) for f in files)


def run_jobs(bags: Sequence[str], out_dir: str, what: Dict[str, object], model_files: Sequence[str],
             actor_class, actor_args: tuple, workers: Optional[int], cpus_per_worker: float,
             gpus_per_worker: float, address: Optional[str], quiet: bool = False) -> FleetRun:
    """Every bag not already done (its result folder for this key exists) processed by
    ``workers`` actors of ``actor_class(*actor_args, board)`` (their ``process(bag, final,
    out_dir)`` writes the result folder with atomic_result and returns the result, or returns
    {"status": "failed", "reason": ...}). Ctrl-C stops the actors and removes what they left
    half-written; the results so far are kept."""
    os.makedirs(out_dir, exist_ok=True)
    lock = RunLock(out_dir)
    try:
        return _run_locked(bags, out_dir, what, model_files, actor_class, actor_args, workers,
                           cpus_per_worker, gpus_per_worker, address, quiet)
    finally:
        lock.release()


def _run_locked(bags, out_dir, what, model_files, actor_class, actor_args, workers, cpus_per_worker,
                gpus_per_worker, address, quiet) -> FleetRun:
    run = FleetRun({}, removed_partial=clean_partial(out_dir))
    t0 = time.perf_counter()
    jobs: List[Job] = []
    pool = ray = progress = None
    hashes = ContentHashes(out_dir)
    try:
        model_hash = "+".join(hashes.of(f) for f in model_files)
        finals: Dict[str, str] = {}
        for bag in bags:
            try:
                key = job_key(hashes.of(bag), model_hash, what)
            except OSError as exc:
                run.results[bag] = {"status": "failed", "bag": bag, "reason": f"cannot read it: {exc}"}
                continue
            final = result_dir(out_dir, bag, key)
            earlier = done_result(final)
            if earlier is not None:
                run.results[bag] = dict(earlier, earlier=True)
            elif final in finals:  # the same bytes under another path: one result serves both
                run.results[bag] = {"status": "same", "bag": bag, "as": finals[final]}
            else:
                finals[final] = bag
                jobs.append(Job(bag, final, key))
        hashes.save()
        if not jobs:
            return run
        ray = start_ray(address)
        run.cluster = address or os.environ.get("RAY_ADDRESS") or "embedded"
        run.workers = worker_count(ray.cluster_resources(), workers, cpus_per_worker, gpus_per_worker, len(jobs))
        board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
        resources = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker, "max_concurrency": 1}
        progress = FleetProgress(len(jobs), sum(bag_frames(j.bag) for j in jobs), enabled=not quiet)

        def poll() -> None:
            try:
                progress.update(ray.get(board.snapshot.remote(), timeout=5))
            except Exception:
                pass

        def on_done(job: Job, result: Dict[str, object]) -> None:
            result = dict(result)
            result.setdefault("bag", job.bag)
            if job.tries:
                result["worker_restarts"] = job.tries
            run.results[job.bag] = result
            progress.bag_done(job.bag, int(result.get("frames") or 0))

        pool = Pool(ray, actor_class, tuple(actor_args) + (board,), run.workers, resources)
        pool.run(jobs, lambda actor, job: actor.process.remote(job.bag, job.final, out_dir), on_done, poll)
        progress.finish()
        progress = None
    except KeyboardInterrupt:
        run.interrupted = True
        if progress is not None:
            progress.line.abort()
    finally:
        hashes.save()
        if pool is not None:
            pool.close()
        if ray is not None and run.cluster == "embedded":
            ray.shutdown()  # its worker processes are gone once this returns
        if run.interrupted and ray is not None:
            time.sleep(0.5 if run.cluster == "embedded" else 3.0)  # killed actors stop writing
        clean_partial(out_dir)  # what an interrupted bag or a killed worker left: no worker writes now
        for job in jobs:
            run.results.setdefault(job.bag, {"status": "interrupted", "bag": job.bag})
        run.seconds = elapsed(t0)
        _resolve_same(run)
    return run


def worker_count(cluster: Dict[str, float], asked: Optional[int], cpus_per_worker: float,
                 gpus_per_worker: float, jobs: int) -> int:
    """How many actors: as asked, else as many as the cluster's CPUs (and GPUs, where a worker
    takes one) hold, never more than there are bags. Refused (ValueError) when one worker does
    not fit the cluster at all: its actors would wait for ever."""
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if cpus_per_worker > cpus or gpus_per_worker > gpus:
        raise ValueError(f"a worker asks for {cpus_per_worker:g} CPU(s) and {gpus_per_worker:g} GPU(s); the "
                         f"cluster has {cpus:g} and {gpus:g}")
    fit = int(cpus // max(cpus_per_worker, 1e-9))
    if gpus_per_worker > 0:
        fit = min(fit, int(gpus // gpus_per_worker))
    n = asked if asked is not None else fit
    if asked is not None and asked > fit:
        raise ValueError(f"{asked} workers of {cpus_per_worker:g} CPU(s) and {gpus_per_worker:g} GPU(s) do not fit "
                         f"the cluster's {cpus:g} CPU(s) and {gpus:g} GPU(s) (at most {fit})")
    return max(1, min(n, jobs))


def _resolve_same(run: FleetRun) -> None:
    for bag, r in list(run.results.items()):
        if r.get("status") == "same":
            first = run.results.get(r["as"], {})
            run.results[bag] = dict(first, bag=bag, same_as=r["as"]) if first.get("status") == "done" else \
                {"status": first.get("status", "failed"), "bag": bag, "reason": f"same content as {r['as']}"}


def throttled_reporter(board, bag: str, every: float = 0.5) -> Callable[[int, int], None]:
    """on_progress for a worker: frames done of a bag to the board, at most every ``every`` s."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every or done >= total:
            last[0] = now
            board.report.remote(bag, done, total)
    return report
