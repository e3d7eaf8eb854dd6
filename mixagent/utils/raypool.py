"""A pool of Ray actors that runs work items one at a time per actor, surviving dead workers.

Shared by trajectory collection (:mod:`mixagent.trajectories.collection`) and evaluation
(:mod:`mixagent.evaluation.runner`): each actor owns expensive state (an environment), so items
go to actors rather than to stateless tasks. Faults:

* an actor that dies (killed, OOM, node lost) fails its item with ``RayActorError``; the item goes
  back to the front of the queue and a replacement actor is started in the background, up to
  ``max_attempts`` tries per item;
* a user error inside an item (a :class:`~mixagent.errors.MixagentError`), or any error while an
  actor builds its state, stops the run with that message: retrying a deterministic error only
  repeats it.

``ensure_ray`` connects to ``RAY_ADDRESS`` (a cluster) when set, else starts a private local
instance without token auth or dashboard.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from mixagent.errors import MixagentError

log = logging.getLogger(__name__)

#: environment variables a worker needs from the driver: the cache, and ``MIXAGENT_COMPILE``
#: (``runtime.compile``'s override). Sent explicitly: a Ray actor on another node, or one whose
#: raylet started before the driver set them, does not see the driver's environment.
FORWARDED_ENV = ("MIXAGENT_CACHE", "MIXAGENT_COMPILE")


def forwarded_env() -> dict[str, str]:
    """The driver's :data:`FORWARDED_ENV` that are set (and not empty)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


class PoolWorker:
    """What every pool actor shares: its identity, its torch threads and its CPU accounting.

    Subclasses call :meth:`_setup` first (environment variables and threads must be set before
    torch is imported for real work) and :meth:`_ready` once their environment is built, so the
    CPU seconds reported by :meth:`stats` cover episodes only — robust to other processes
    sharing the cores, which wall-clock time is not.
    """

    worker_id: str
    setup_seconds: float = 0.0

    def _setup(self, worker_id: str, env_vars: dict[str, str] | None, threads: int | None, *,
               log_level: int | None = None) -> None:
        """Identity, environment, threads and (``log_level``) logging of this worker.

        ``log_level`` is the driver's: a Ray actor is a fresh process whose root logger shows
        warnings only, so without it the actor's INFO lines (a base being pre-trained, with its
        progress) would never reach the driver's stderr, where Ray forwards actor output.
        """
        self.worker_id = f"{worker_id}@{socket.gethostname()}:{os.getpid()}"
        if log_level is not None:
            root = logging.getLogger()
            if not root.handlers:
                logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                                    datefmt="%H:%M:%S")
            root.setLevel(log_level)
        os.environ.update(env_vars or {})
        if threads is not None:
            os.environ["MIXAGENT_NUM_THREADS"] = str(threads)
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self._t_setup = time.perf_counter()

    def _ready(self) -> None:
        self.setup_seconds = time.perf_counter() - self._t_setup
        self._cpu0 = time.process_time()
        self._episodes = 0

    def info(self) -> dict[str, Any]:
        """Who this worker is and what it cost to start (the driver waits on this)."""
        import torch

        return {"worker": self.worker_id, "setup_seconds": self.setup_seconds,
                "threads": torch.get_num_threads()}

    def stats(self) -> dict[str, Any]:
        """CPU seconds spent since the worker was ready, and episodes run."""
        return {"worker": self.worker_id, "cpu_seconds": time.process_time() - self._cpu0,
                "episodes": self._episodes}


def compile_applied(workers_info: list[dict[str, Any]]) -> list[str] | None:
    """The training-loss compile states the workers reported (``runtime.compile``: "off",
    "compiled", "fallback"; "requested" for a family worker with no environment built yet), or
    None when no worker started."""
    found: set[str] = set()
    for w in workers_info:
        c = w.get("compile")
        found.update(c if isinstance(c, list) else [c] if c is not None else [])
    return sorted(found) or None


def ensure_ray(address: str | None) -> bool:
    """Connect to Ray (``address``/``RAY_ADDRESS``, else a local instance); True if started here."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # a private single-user instance: no token auth (Ray >= 2.60 would write a token file
        # under the home directory) and no dashboard. address="local" because a bare ray.init()
        # joins whatever cluster already runs on the machine (another user's job, a test's
        # simulated cluster) and dies with it
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    return True


class ActorPool:
    """Items to actors, one in flight per actor; dead actors are replaced, items retried.

    Actors must have an ``info()`` method (awaited at start, and on replacements, so setup
    errors surface) and, for :meth:`cpu_seconds`, a ``stats()`` method returning
    ``{"cpu_seconds": ...}``. ``what`` names an item in messages ("episode", "task").

    A replacement actor gets items only once its ``info()`` has returned. After a lost node
    there may be no room for it until the cluster grows, and an item sent to an actor that is
    never scheduled would wait forever; ``pending`` keeps such actors' ``info`` calls from one
    :meth:`run` to the next (phases of an evaluation share a pool).
    """

    def __init__(self, actors: list[Any], factory: Callable[[], Any], max_replacements: int,
                 what: str = "episode", role: str = "collection worker"):
        self.actors = list(actors)
        self.factory = factory
        self.max_replacements = max_replacements
        self.replaced = 0
        self.what = what
        self.role = role
        #: replacement actors not ready yet: their in-flight ``info()`` ref -> actor index
        self.pending: dict[Any, int] = {}
        #: item calls sent to actors (one round trip each), over every :meth:`run`
        self.calls = 0

    def start(self) -> list[dict[str, Any]]:
        """Wait until every actor has built its state (surfacing setup errors)."""
        import ray

        infos = []
        for i in range(len(self.actors)):
            while True:
                try:
                    infos.append(ray.get(self.actors[i].info.remote()))
                    break
                except ray.exceptions.RayTaskError as err:
                    raise unwrap_error(err) from None
                except ray.exceptions.RayActorError as err:
                    cause = creation_cause(err, self.role)
                    if cause is not None:
                        raise cause from None
                    self._replace(i, err)
        return infos

    def _replace(self, i: int, err: BaseException) -> None:
        import ray

        self.replaced += 1
        if self.replaced > self.max_replacements:
            raise MixagentError(f"workers keep dying ({self.replaced} replaced); last error: "
                                f"{err}") from None
        log.warning("worker %d died (%s); starting a replacement", i, short_error(err))
        with contextlib.suppress(Exception):  # already gone
            ray.kill(self.actors[i])
        self.actors[i] = self.factory()

    def run(self, items: Sequence[Hashable], method: str, on_result: Callable[[Any, Any], None],
            max_attempts: int, call_args: Callable[[Any], Sequence[Any]] | None = None,
            depth: int = 1) -> int:
        """Run ``method(*call_args(item))`` (default ``method(item)``) for every item; returns
        how many tries were repeated. ``on_result(item, value)`` is called in the driver as
        results arrive (in completion order, not item order).

        ``depth``: items queued on each actor at once. An actor runs its calls one after the
        other, so with ``depth`` 2 its next item is already waiting when one finishes: it does
        not sit idle for a round trip and for the driver's handling of the result (writing a
        shard) — on millisecond episodes that gap is a large share of each episode. An actor
        that dies fails every item queued on it; only the one it was running (the first not
        finished) counts as a try, the others go back to the queue uncharged.

        A replacement actor starts in the background (its ``info`` call is in flight like an
        item), so the other workers keep going while it builds its state.
        """
        import ray

        args_of = call_args or (lambda item: (item,))
        queue = collections.deque(items)
        attempts: collections.Counter[Hashable] = collections.Counter()
        starting = set(self.pending.values())
        ready = [i for i in range(len(self.actors)) if i not in starting]
        #: the item calls queued on each actor, in the order it runs them
        lanes: dict[int, collections.deque[Any]] = {i: collections.deque()
                                                    for i in range(len(self.actors))}
        # ref -> (actor, item, is_item); is_item False: a replacement actor starting
        in_flight: dict[Any, tuple[int, Any, bool]] = {ref: (i, None, False)
                                                       for ref, i in self.pending.items()}
        self.pending = {}
        retries = 0

        def charge(item: Any, err: BaseException, died: bool) -> None:
            nonlocal retries
            attempts[item] += 1
            if attempts[item] >= max_attempts:
                if died:
                    raise MixagentError(f"{self.what} {item}: its worker died {attempts[item]} "
                                        f"times; last error: {short_error(err)}") from None
                raise MixagentError(f"{self.what} {item} failed {attempts[item]} times; last "
                                    f"error:\n{err}") from None
            retries += 1

        while queue or any(lanes.values()):
            while queue:  # breadth first: every free actor gets one item before any gets two
                free = [i for i in ready if len(lanes[i]) < depth]
                if not free:
                    break
                i = min(free, key=lambda j: len(lanes[j]))
                item = queue.popleft()
                ref = getattr(self.actors[i], method).remote(*args_of(item))
                in_flight[ref] = (i, item, True)
                lanes[i].append(ref)
                self.calls += 1
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                i, item, is_item = in_flight.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = unwrap_error(err)
                    if isinstance(cause, MixagentError) or not is_item:
                        raise cause from None
                    lanes[i].remove(ref)
                    charge(item, err, died=False)
                    log.warning("%s %s failed (%s); retrying", self.what, item, short_error(err))
                    queue.appendleft(item)
                    continue
                except ray.exceptions.RayActorError as err:
                    if not is_item:
                        cause = creation_cause(err, self.role)
                        if cause is not None:
                            raise cause from None
                    else:
                        failed = self._drain(lanes[i], ref, item, in_flight, on_result)
                        charge(failed[0], err, died=True)  # the one it was running
                        queue.extendleft(reversed(failed))  # retried by whichever is free next
                    ready = [j for j in ready if j != i]
                    self._replace(i, err)
                    in_flight[self.actors[i].info.remote()] = (i, None, False)
                    continue
                if is_item:
                    lanes[i].remove(ref)
                    on_result(item, value)
                else:
                    ready.append(i)
        # replacements still starting: not given work until they are up, in a later run too
        self.pending = {ref: i for ref, (i, _, is_item) in in_flight.items() if not is_item}
        return retries

    @staticmethod
    def _drain(lane: collections.deque[Any], dead_ref: Any, dead_item: Any,
               in_flight: dict[Any, tuple[int, Any, bool]],
               on_result: Callable[[Any, Any], None]) -> list[Any]:
        """Empty a dead actor's lane; returns its unfinished items in the order it would have
        run them. A call that did finish before the death is delivered, not run again."""
        import ray

        failed = []
        for ref in list(lane):
            item = dead_item if ref == dead_ref else in_flight.pop(ref)[1]
            if ref != dead_ref and ray.wait([ref], timeout=0)[0]:
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = unwrap_error(err)
                    if isinstance(cause, MixagentError):
                        raise cause from None
                except ray.exceptions.RayActorError:
                    pass
                else:
                    on_result(item, value)
                    continue
            failed.append(item)
        lane.clear()
        return failed

    def cpu_seconds(self) -> float:
        """CPU seconds the live actors used since their state was ready (best effort: a replaced
        actor's share is lost)."""
        import ray

        total = 0.0
        starting = set(self.pending.values())  # never started: asking them would wait
        for a in (a for i, a in enumerate(self.actors) if i not in starting):
            with contextlib.suppress(Exception):
                total += float(ray.get(a.stats.remote(), timeout=30)["cpu_seconds"])
        return total

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(a)


def unwrap_error(err: BaseException) -> BaseException:
    """The user-level exception inside a Ray task error, when there is one."""
    try:
        cause = err.as_instanceof_cause()  # type: ignore[attr-defined]
    except Exception:
        return err
    return cause if isinstance(cause, MixagentError) else err


def creation_cause(err: BaseException, role: str = "collection worker") -> BaseException | None:
    """An error raised while the actor was being constructed (a bad spec, missing data on the
    node, a broken install): not worth retrying, so it becomes a user-facing error."""
    if not getattr(err, "actor_init_failed", False):
        return None
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(getattr(err, "error_msg", "") or err))
    found = re.findall(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", text, flags=re.M)
    detail = f"{found[-1][0].rsplit('.', 1)[-1]}: {found[-1][1]}" if found else short_error(err)
    return MixagentError(f"a {role} failed to start: {detail}")


def short_error(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 300 else text[:300] + "..."
