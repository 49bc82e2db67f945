"""The rollout engine: env workers run episodes, one policy call serves every worker waiting for actions.

The engine (in the CLI's process) hands episodes to idle workers from a queue, preferring an episode of
the task a worker already has loaded, so one slow task never stalls the rest. Each worker sends back an
observation whenever its episode needs the next chunk; the engine gathers the observations of all waiting
workers and calls the policy once on the batch. It holds a waiting observation back only while another
worker is expected to ask within one policy call's time (or `gather_window_s`, if longer): a cheap policy
is called at once, an expensive one serves the workers together.

Results do not depend on the number of workers or the order episodes finish in: each episode's seed and
initial state come from its place in the run, the env is reset to them, and policies keep their
per-episode state by episode key. Every finished episode is committed at once. A worker that dies, or
works longer than `episode_timeout_s` on one episode, is restarted; its episode is recorded as an error
and run again, up to MAX_ATTEMPTS in all. Ctrl-C stops at a safe point with all finished work kept.
"""

from __future__ import annotations

import dataclasses
import errno
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import cast

import numpy as np

from qdepth_bench.core.errors import UserError, is_transient
from qdepth_bench.core.fingerprint import with_renderer
from qdepth_bench.core.policy import DepthCodec, DepthPrediction, EpisodeContext, ObservationBatch, PolicyRequirements
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.sim import EpisodeSink
from qdepth_bench.eval.depth_metrics import EpisodeDepth, score_frames, side_by_side
from qdepth_bench.eval.episode import EpisodeResult, check_chunk
from qdepth_bench.eval.interrupt import GracefulInterrupt
from qdepth_bench.eval.messages import (
    Abort,
    Chunk,
    Died,
    Ended,
    Fatal,
    FromWorker,
    Observation,
    StartEpisode,
    WorkerSettings,
)
from qdepth_bench.eval.plan import MAX_ATTEMPTS, RunPlan
from qdepth_bench.eval.pool import WorkerPool, make_pool
from qdepth_bench.eval.timing import describe, split
from qdepth_bench.eval.videos import VideoSink, video_path, write_video
from qdepth_bench.eval.worker import error_text
from qdepth_bench.results.rows import episode_row
from qdepth_bench.results.store import Store

#: consecutive worker deaths without any finished episode after which the run stops as a setup problem
MAX_STARTUP_DEATHS = 3
#: seconds between heartbeats of a running session (well inside the store's STALE_AFTER_S)
HEARTBEAT_S = 10.0


@dataclass
class EngineOptions:
    """How to execute a run; none of these change its results."""

    workers: int = 1
    executor: str = "local"  # local | ray
    ray_address: str | None = None
    gather_window_s: float = 0.005
    episode_timeout_s: float = 900.0
    video_dir: Path | None = None
    log_path: Path | None = None
    #: more places finished episodes go (e.g. demonstration files for data generation)
    sinks: tuple[EpisodeSink, ...] = ()
    #: cameras to render beyond the policy's (demonstration files hold every camera)
    extra_cameras: tuple[str, ...] = ()
    #: work on a run another live process is running, taking only episodes nobody has claimed
    join: bool = False
    #: score the policy's depth predictions at every observed frame (`eval.depth_metrics`); with
    #: `depth_steps` every frame's scores are kept too; `depth_codec` is the policy's VQ-VAE (token heads)
    depth_metrics: bool = False
    depth_steps: bool = False
    depth_codec: DepthCodec | None = None


@dataclass
class EngineStats:
    """What a run cost: policy calls and the rows they served, env steps, wall time."""

    policy_calls: int = 0
    policy_rows: int = 0
    policy_seconds: float = 0.0
    env_steps: int = 0
    episodes: int = 0
    wall_s: float = 0.0
    #: seconds from the start of `execute` to the first policy call (worker start, env build, first reset)
    first_call_s: float | None = None
    #: the `timing` of every episode recorded, in the order they finished
    episode_timings: list[dict[str, float]] = field(default_factory=list)

    @property
    def phases(self) -> dict[str, float]:
        """Episode-seconds per phase (`eval.timing.split`)."""
        return split(self.episode_timings)

    @property
    def calls_per_step(self) -> float:
        return self.policy_calls / self.env_steps if self.env_steps else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / self.wall_s if self.wall_s else 0.0


@dataclass
class _Slot:
    """The engine's view of one worker: its episode, whether it waits for actions, how long it has worked."""

    episode: EpisodeSpec | None = None
    task_id: int | None = None
    observation: ObservationBatch | None = None
    waiting_since: float = 0.0
    sent_at: float | None = None
    #: what the worker is doing: "episode" (reset, maybe an env build) or "chunk"; predicts its next answer
    phase: str = "episode"
    busy_s: float = 0.0
    #: this episode's seconds waiting for a policy call; a reply's time beyond the worker's own, for its first
    #: observation (a worker process still starting up, a message in flight) and for its chunks (transfer)
    policy_wait_s: float = 0.0
    start_wait_s: float = 0.0
    transfer_s: float = 0.0
    #: with --depth-metrics: this episode's depth scores, and its side-by-side depth frames for --video
    depth: EpisodeDepth | None = None
    depth_frames: list[np.ndarray] = field(default_factory=list)

    def assign(self, episode: EpisodeSpec, now: float) -> None:
        self.episode, self.task_id, self.observation, self.sent_at, self.busy_s = (
            episode,
            episode.task_id,
            None,
            now,
            0.0,
        )
        self.phase, self.policy_wait_s, self.start_wait_s, self.transfer_s = "episode", 0.0, 0.0, 0.0
        self.depth, self.depth_frames = None, []

    def clear(self) -> None:
        self.episode, self.observation, self.sent_at = None, None, None

    def worked(self, now: float) -> float:
        return self.busy_s + (now - self.sent_at if self.sent_at is not None else 0.0)


@dataclass
class _RunLog:
    """Append-only per-run log: one line per event, next to the database (`logs/<run id>.log`)."""

    path: Path | None

    def write(self, text: str) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(f"{datetime.now().isoformat(timespec='seconds')} {text}\n")
        except OSError as exc:  # a log is a convenience: a full disk must not cost an episode
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise


def worker_settings(options: EngineOptions, plan: RunPlan) -> WorkerSettings:
    """What every env worker of this run needs: the suite, what the policy needs from it (and the cameras the
    sinks want besides), the run, the sinks."""
    videos: tuple[EpisodeSink, ...] = (VideoSink(options.video_dir),) if options.video_dir is not None else ()
    requirements = plan.policy.requirements
    cameras = tuple(dict.fromkeys((*requirements.cameras, *options.extra_cameras)))
    depth = requirements.depth or options.depth_metrics
    return WorkerSettings(
        plan.spec, dataclasses.replace(requirements, cameras=cameras, depth=depth), plan.run_id, videos + options.sinks
    )


class Engine:
    """Runs plans on env workers that it alone starts, owns and closes.

    Use it as a context manager: a pool started early and never used (the policy was refused, the run had
    nothing to do, Ctrl-C) is killed when the `with` block ends; a pool a run used is closed with that run."""

    def __init__(self) -> None:
        self._pool: WorkerPool | None = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def start_early(self, spec: SuiteSpec, workers: int, task_ids: list[int]) -> None:
        """Start local env workers before the policy is loaded: each imports the simulator and builds the env
        of one of `task_ids` (in turn) while the policy loads, for the main camera at the usual frame size,
        which is what most policies ask for. The first run with episodes to run gives them its settings; a
        worker whose env was built for another view (cameras, frame size, depth, privileged state) builds it
        again. Until then the workers hold their output back, so a run refused meanwhile still says so in
        one line."""
        self.close()
        self._pool = make_pool(workers, WorkerSettings(spec, PolicyRequirements(), ""), early=True)
        for slot in range(workers):
            self._pool.prepare(slot, task_ids[slot % len(task_ids)])

    def close(self) -> None:
        """Kill the workers started early that no run has used: nothing they do is wanted any more."""
        self._close_pool(wait=False)

    def _close_pool(self, wait: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(wait=wait)

    def execute(
        self,
        store: Store,
        plan: RunPlan,
        options: EngineOptions,
        on_episode: Callable[[EpisodeResult], None] | None = None,
    ) -> EngineStats:
        """Run the plan's pending episodes on `options.workers` env workers, recording each as it finishes;
        workers started early are used by the first plan that has episodes to run."""
        stats = EngineStats()
        start = time.perf_counter()
        log = _RunLog(options.log_path)
        session = store.start_session(plan.run_id, plan.record["command"], plan.fingerprint, join=options.join)
        if not store.others_alive(plan.run_id, session):  # a joining process leaves the owner's record as it is
            store.start_run(plan.record)
        log.write(
            f"start run {plan.run_id} suite={plan.spec.name} policy={plan.policy.name} "
            f"pending={len(plan.pending)} workers={options.workers} executor={options.executor}"
        )
        status = "failed"
        with GracefulInterrupt() as stop:
            try:
                if plan.pending:
                    settings = worker_settings(options, plan)
                    if self._pool is None:
                        self._pool = make_pool(options.workers, settings, options.executor, options.ray_address)
                    else:
                        self._pool.configure(settings)
                    _Run(store, plan, options, self._pool, log, on_episode, stats, start, session).run(stop)
                status = "finished"
            except KeyboardInterrupt:
                status = "interrupted"
                raise
            except UserError as exc:
                log.write(f"setup error: {exc}")
                raise
            finally:
                if plan.pending:
                    self._close_pool(wait=True)
                try:
                    if status != "finished" or not store.others_alive(plan.run_id, session):
                        store.finish_run(plan.run_id, status)  # finished only once nobody else still works on it
                    store.end_session(session, status)
                except sqlite3.Error as exc:  # a full disk: the error that stopped the run is the one to report
                    log.write(f"could not write the run's status: {exc}")
                stats.wall_s = time.perf_counter() - start
                first_call = "" if stats.first_call_s is None else f" first_policy_call={stats.first_call_s:.1f}s"
                log.write(
                    f"end run {plan.run_id} status={status} episodes={stats.episodes} steps={stats.env_steps} "
                    f"policy_calls={stats.policy_calls} policy_rows={stats.policy_rows} wall={stats.wall_s:.1f}s"
                    f"{first_call}"
                )
                if stats.episode_timings:
                    log.write(f"time: {describe(stats.phases)}")
        return stats


def execute(
    store: Store,
    plan: RunPlan,
    options: EngineOptions,
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> EngineStats:
    """One plan on workers started for it and closed with it (`Engine.execute`)."""
    with Engine() as engine:
        return engine.execute(store, plan, options, on_episode)


class _Run:
    """One plan being executed: hands episodes to the pool's workers, batches their observations into policy
    calls, records what they finish."""

    def __init__(
        self,
        store: Store,
        plan: RunPlan,
        options: EngineOptions,
        pool: WorkerPool,
        log: _RunLog,
        on_episode: Callable[[EpisodeResult], None] | None,
        stats: EngineStats,
        started: float,
        session: str,
    ) -> None:
        self.store, self.plan, self.options, self.pool, self.log = store, plan, options, pool, log
        #: the store's row for this invocation: its heartbeat says the run has a live owner
        self.session, self.heartbeat_at = session, time.time()
        self.renderer_known = False
        self.on_episode, self.stats = on_episode, stats
        #: when `execute` began (before the workers were started), for the time to the first policy call
        self.started = started
        self.queue: deque[EpisodeSpec] = deque(plan.pending)
        self.slots = [_Slot(task_id=task_id) for task_id in pool.prepared]
        self.replan = int(plan.spec.protocol["replan_steps"])
        self.tasks = {t: plan.backend.task_info(t) for t in sorted({e.task_id for e in plan.pending})}
        self.deaths_without_result = 0
        #: moving averages, as the workers report them, of the seconds a reset and a chunk take
        self.phase_s: dict[str, float] = {}

    def run(self, stop: GracefulInterrupt) -> None:
        while self.queue or any(s.episode is not None for s in self.slots):
            stop.check()
            self._hand_out()
            for slot, reply in self.pool.poll(self._poll_timeout()):
                self._on_reply(slot, reply)
            self._act_if_ready()
            self._kill_overdue()
            if time.time() - self.heartbeat_at >= HEARTBEAT_S:
                self.store.heartbeat(self.session)
                self.heartbeat_at = time.time()

    def _hand_out(self) -> None:
        now = time.perf_counter()
        for i, slot in enumerate(self.slots):
            if slot.episode is not None:
                continue
            episode = self._claim_next(slot)
            if episode is None:
                continue
            self.plan.policy.reset(EpisodeContext(episode.key, self.tasks[episode.task_id], episode.seed))
            slot.assign(episode, now)
            if self.options.depth_metrics:
                size = self.options.depth_codec.codebook_size if self.options.depth_codec is not None else 0
                slot.depth = EpisodeDepth(size, self.options.depth_steps)
            self.pool.send(i, StartEpisode(episode))

    def _claim_next(self, slot: _Slot) -> EpisodeSpec | None:
        """The next episode for this slot that this session could claim (another process sharing the run may
        have recorded or claimed some); None when the queue has none left."""
        while self.queue:
            episode = self._next_episode(slot)
            self.queue.remove(episode)
            if self.store.claim(self.plan.run_id, episode.place, self.session):
                return episode
            self.log.write(f"episode {episode.key} taken by another process on this run")
        return None

    def _window(self) -> float:
        """How long waiting for another worker's observation pays: the option, or one policy call if longer.

        Waiting less than a call's cost for a worker that is about to ask saves that call; once workers are
        served together they finish their chunks together and stay in step.
        """
        mean_call = self.stats.policy_seconds / self.stats.policy_calls if self.stats.policy_calls else 0.0
        return max(self.options.gather_window_s, mean_call)

    def _worth_waiting(self, running: list[int], waiting: list[int], now: float) -> bool:
        """True while a running worker is expected to ask within about one window (and the wait is not overdue).

        When the chunk takes longer than a policy call, serving workers in turn and serving them together give
        the same env throughput; together they need 1/N of the calls, so the wait costs nothing once in step.
        """
        window = self._window()
        if now >= min(self.slots[i].waiting_since for i in waiting) + 2 * window:
            return False
        for i in running:
            slot = self.slots[i]
            expected = self.phase_s.get(slot.phase)
            if slot.observation is None and slot.sent_at is not None and expected is not None:
                if slot.sent_at + expected - now <= 1.5 * window:  # 1.5: arrivals jitter around the estimate
                    return True
        return False

    def _next_episode(self, slot: _Slot) -> EpisodeSpec:
        """An episode of the task this worker has loaded, else of a task no other worker has loaded, else the
        queue's first: every env construction (seconds) that this avoids is time for steps."""
        loaded = {s.task_id for s in self.slots if s is not slot}
        for wanted in (lambda e: e.task_id == slot.task_id, lambda e: e.task_id not in loaded):
            episode = next((e for e in self.queue if wanted(e)), None)
            if episode is not None:
                return episode
        return self.queue[0]

    def _poll_timeout(self) -> float:
        waiting = [s for s in self.slots if s.observation is not None]
        if waiting:
            return max(0.0005, min(s.waiting_since for s in waiting) + 2 * self._window() - time.perf_counter())
        return 1.0

    def _on_reply(self, i: int, reply: FromWorker) -> None:
        slot, now = self.slots[i], time.perf_counter()
        if isinstance(reply, Fatal):
            raise UserError(reply.text)
        if isinstance(reply, Died):
            episode = slot.episode
            self._restart(i)
            self.deaths_without_result += 1
            if episode is not None:
                self._fail(i, episode, f"{reply.reason} during the episode; worker restarted", transient=True)
            if self.deaths_without_result >= MAX_STARTUP_DEATHS:
                raise UserError(
                    f"env workers keep dying before finishing an episode ({reply.reason}); "
                    "check the simulator with `qdepth-bench doctor`."
                )
            return
        if slot.episode is None:  # an answer for an episode already given up (aborted or timed out)
            return
        round_trip = None
        if slot.sent_at is not None:
            round_trip = now - slot.sent_at
            slot.busy_s += round_trip
            slot.sent_at = None
        if isinstance(reply, Observation):
            slot.observation, slot.waiting_since = reply.observation, now
            took, previous = reply.seconds, self.phase_s.get(slot.phase)
            if round_trip is not None:  # beyond the worker's own time: transfer, or a worker still starting
                waited = max(0.0, round_trip - took)
                if slot.phase == "episode":
                    slot.start_wait_s += waited
                else:
                    slot.transfer_s += waited
            self.phase_s[slot.phase] = took if previous is None else 0.8 * previous + 0.2 * took
        elif isinstance(reply, Ended):
            self.deaths_without_result = 0
            self._finish(i, reply.result)

    def _act_if_ready(self) -> None:
        """One policy call for every waiting worker, once all running workers wait or the window closes."""
        running = [i for i, s in enumerate(self.slots) if s.episode is not None]
        waiting = [i for i in running if self.slots[i].observation is not None]
        if not waiting:
            return
        if len(waiting) < len(running) and self._worth_waiting(running, waiting, time.perf_counter()):
            return
        # `waiting` holds running slots with an observation: both are set
        batch = ObservationBatch.concat([cast(ObservationBatch, self.slots[i].observation) for i in waiting])
        action_dim = self.tasks[cast(EpisodeSpec, self.slots[waiting[0]].episode).task_id].action_dim
        started = time.perf_counter()
        if self.stats.first_call_s is None:
            self.stats.first_call_s = started - self.started
        try:
            self.stats.policy_calls += 1
            self.stats.policy_rows += len(waiting)
            if self.options.depth_metrics:
                actions, prediction = self.plan.policy.act_with_depth(batch)
                self._score_depth(waiting, batch, prediction)
            else:
                actions = self.plan.policy.act(batch)
            chunks = check_chunk(actions, len(waiting), action_dim)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - the episodes of this batch fail with the policy's error
            for i in waiting:
                self.pool.send(i, Abort())
                episode = cast(EpisodeSpec, self.slots[i].episode)
                self._fail(i, episode, f"policy: {error_text(exc)}", transient=is_transient(exc))
            return
        now = time.perf_counter()
        self.stats.policy_seconds += now - started
        for row, i in enumerate(waiting):
            slot = self.slots[i]
            slot.policy_wait_s += now - slot.waiting_since
            slot.observation, slot.sent_at, slot.phase = None, now, "chunk"
            self.pool.send(i, Chunk(np.asarray(chunks[row, : self.replan])))

    def _score_depth(self, waiting: list[int], batch: ObservationBatch, prediction: DepthPrediction) -> None:
        """Score each waiting episode's frame (`eval.depth_metrics`); keep its side-by-side frame for --video."""
        scores = score_frames(batch.depth["main"], prediction, self.options.depth_codec)
        for row, (i, frame) in enumerate(zip(waiting, scores, strict=True)):
            slot = self.slots[i]
            if slot.depth is not None:
                slot.depth.add(frame)
            if self.options.video_dir is not None:
                slot.depth_frames.append(side_by_side(batch.images["main"][row], frame))

    def _kill_overdue(self) -> None:
        now = time.perf_counter()
        for i, slot in enumerate(self.slots):
            if slot.episode is None or slot.worked(now) <= self.options.episode_timeout_s:
                continue
            episode = slot.episode
            self._restart(i)
            self._fail(
                i,
                episode,
                f"env worker took over {self.options.episode_timeout_s:g} s on this episode (hung?); worker restarted",
                transient=True,
            )

    def _restart(self, i: int) -> None:
        """A fresh worker in slot i (it has no env loaded yet)."""
        self.pool.restart(i)
        self.slots[i].task_id = None

    def _fail(self, i: int, episode: EpisodeSpec, error: str, transient: bool) -> None:
        """Record the episode slot i was running as an error (run again while attempts are left)."""
        result = EpisodeResult(episode, self.tasks[episode.task_id].task_name, "failure")
        self._finish(i, result.fail(error, transient))

    def _write_depth_video(self, result: EpisodeResult, frames: list[np.ndarray]) -> None:
        """The episode's observed frames as camera | simulator depth | predicted depth, beside its own mp4
        (`_depth` added to its name), at the rate frames were observed; a failure fails the episode as the
        camera video's would."""
        episode, folder = result.episode, cast(Path, self.options.video_dir)
        path = video_path(
            folder,
            self.plan.run_id,
            episode.suite,
            episode.task_id,
            episode.episode_index,
            result.status,
            episode.repeat,
        )
        fps = max(1, round(int(self.plan.spec.protocol["control_hz"]) / self.replan))
        try:
            write_video(path.with_name(f"{path.stem}_depth{path.suffix}"), frames, fps)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the episode is retried
            result.fail(f"writing its depth video: {error_text(exc)}", is_transient(exc))
            result.depth = {}

    def _finish(self, i: int, result: EpisodeResult) -> None:
        """Record an episode's outcome; an error with attempts left goes back in the queue."""
        slot = self.slots[i]
        result.timing.update(
            policy_wait_s=slot.policy_wait_s, worker_start_s=slot.start_wait_s, transfer_s=slot.transfer_s
        )
        if slot.depth is not None and result.status != "error":
            result.depth = slot.depth.summary()
            if slot.depth_frames and self.options.video_dir is not None:
                self._write_depth_video(result, slot.depth_frames)
        slot.clear()
        place = result.episode.place
        attempts = self.plan.attempts.get(place, 0) + 1
        self.plan.attempts[place] = attempts
        if result.status == "error" and attempts < MAX_ATTEMPTS:
            result.will_retry = True
            self.queue.append(result.episode)
        if result.renderer and not self.renderer_known:
            self.store.set_session_fingerprint(self.session, with_renderer(self.plan.fingerprint, result.renderer))
            self.renderer_known = True
        self.store.record_episode(episode_row(self.plan.run_id, self.plan.spec.name, result, attempts, self.session))
        self.stats.episode_timings.append(result.timing)
        self.stats.env_steps += result.steps
        self.stats.episodes += 1
        self.log.write(
            f"episode {result.episode.key} worker={i} status={result.status} steps={result.steps} "
            f"wall={result.wall_time_s:.2f}s attempt={attempts}" + (f" error={result.error!r}" if result.error else "")
        )
        if self.on_episode is not None:
            self.on_episode(result)
