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
        # under the home directory) and no dashboard
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    return True


class ActorPool:
    """Items to actors, one in flight per actor; dead actors are replaced, items retried.

    Actors must have an ``info()`` method (awaited at start, and on replacements, so setup
    errors surface) and, for :meth:`cpu_seconds`, a ``stats()`` method returning
    ``{"cpu_seconds": ...}``. ``what`` names an item in messages ("episode", "task").
    """

    def __init__(self, actors: list[Any], factory: Callable[[], Any], max_replacements: int,
                 what: str = "episode", role: str = "collection worker"):
        self.actors = list(actors)
        self.factory = factory
        self.max_replacements = max_replacements
        self.replaced = 0
        self.what = what
        self.role = role

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
            max_attempts: int, call_args: Callable[[Any], Sequence[Any]] | None = None) -> int:
        """Run ``method(*call_args(item))`` (default ``method(item)``) for every item; returns
        how many tries were repeated. ``on_result(item, value)`` is called in the driver as
        results arrive (in completion order, not item order).

        A replacement actor starts in the background (its ``info`` call is in flight like an
        item), so the other workers keep going while it builds its state.
        """
        import ray

        args_of = call_args or (lambda item: (item,))
        what = self.what
        queue = collections.deque(items)
        attempts: collections.Counter[Hashable] = collections.Counter()
        idle = list(range(len(self.actors)))
        # ref -> (actor, item, is_item); is_item False: a replacement actor starting
        in_flight: dict[Any, tuple[int, Any, bool]] = {}
        retries = 0
        while queue or any(is_item for _, _, is_item in in_flight.values()):
            while idle and queue:
                i, item = idle.pop(0), queue.popleft()
                in_flight[getattr(self.actors[i], method).remote(*args_of(item))] = (i, item, True)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                i, item, is_item = in_flight.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = unwrap_error(err)
                    if isinstance(cause, MixagentError) or not is_item:
                        raise cause from None
                    attempts[item] += 1
                    if attempts[item] >= max_attempts:
                        raise MixagentError(f"{what} {item} failed {attempts[item]} times; last "
                                            f"error:\n{err}") from None
                    log.warning("%s %s failed (%s); retrying", what, item, short_error(err))
                    queue.appendleft(item)
                    retries += 1
                    idle.append(i)
                    continue
                except ray.exceptions.RayActorError as err:
                    if not is_item:
                        cause = creation_cause(err, self.role)
                        if cause is not None:
                            raise cause from None
                    else:
                        attempts[item] += 1
                        if attempts[item] >= max_attempts:
                            raise MixagentError(f"{what} {item}: its worker died {attempts[item]} "
                                                f"times; last error: {short_error(err)}") from None
                        queue.appendleft(item)  # retried by whichever worker is free next
                        retries += 1
                    self._replace(i, err)
                    in_flight[self.actors[i].info.remote()] = (i, None, False)
                    continue
                if is_item:
                    on_result(item, value)
                idle.append(i)
        return retries

    def cpu_seconds(self) -> float:
        """CPU seconds the live actors used since their state was ready (best effort: a replaced
        actor's share is lost)."""
        import ray

        total = 0.0
        for a in self.actors:
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
