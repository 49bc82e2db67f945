"""Where an evaluation's time goes: per-episode timings, and their split into the phases a user can act on.

Each episode records (worker side) the seconds spent building its env (when it had to be built), resetting,
and in observed and unobserved steps, and (engine side) the seconds its observations waited for a policy
call, waited for a worker process still starting (its first observation), and spent in transfer (pipes or
Ray, pickling, scheduling). Physics and rendering happen inside one
simulator step and no simulator times them apart, so the split is inferred: an unobserved step is physics
(and success checks) only, so physics is every step at that mean cost and rendering is what observed steps
cost beyond it. With every step observed (a video, chunks of one action) the two are not split.
"""

from __future__ import annotations

from collections.abc import Iterable

#: per-episode timing keys, as recorded (JSON) with each episode
WORKER_KEYS = ("env_build_s", "reset_s", "observed_steps", "observed_step_s", "blind_steps", "blind_step_s")
ENGINE_KEYS = ("worker_start_s", "policy_wait_s", "transfer_s")
#: the phases of `split`, in the order they are printed
PHASES = ("worker start", "env build", "reset", "physics", "render", "steps", "policy wait", "transfer")


def new_episode_timing() -> dict[str, float]:
    return dict.fromkeys(WORKER_KEYS + ENGINE_KEYS, 0.0)


def split(timings: Iterable[dict[str, float]]) -> dict[str, float]:
    """Seconds per phase summed over episodes (episode-seconds: with N workers they add up to about N times
    the wall time). "steps" holds step time only when it cannot be split into physics and render."""
    total = new_episode_timing()
    for timing in timings:
        for key in total:
            total[key] += float(timing.get(key) or 0.0)
    out = {
        "worker start": total["worker_start_s"],
        "env build": total["env_build_s"],
        "reset": total["reset_s"],
        "policy wait": total["policy_wait_s"],
        "transfer": total["transfer_s"],
    }
    if total["blind_steps"] and total["observed_steps"]:
        blind_mean = total["blind_step_s"] / total["blind_steps"]
        render = max(0.0, total["observed_step_s"] - total["observed_steps"] * blind_mean)
        out["physics"] = total["blind_step_s"] + total["observed_step_s"] - render
        out["render"] = render
    else:
        out["steps"] = total["blind_step_s"] + total["observed_step_s"]
    return {phase: out[phase] for phase in PHASES if phase in out}


def bound(phases: dict[str, float]) -> str:
    """What the run is bound by: the simulator (physics), the renderer, the policy or start-up."""
    groups = {
        "sim": phases.get("physics", 0.0) + phases.get("steps", 0.0),
        "render": phases.get("render", 0.0),
        "policy": phases.get("policy wait", 0.0),
        "start-up": phases.get("worker start", 0.0) + phases.get("env build", 0.0) + phases.get("reset", 0.0),
        "transfer": phases.get("transfer", 0.0),
    }
    return max(groups, key=lambda k: groups[k])


def describe(phases: dict[str, float]) -> str:
    """One line: each phase's share of the episode-seconds, and what the run is bound by."""
    whole = sum(phases.values())
    if whole <= 0:
        return "no timings recorded"
    shares = ", ".join(f"{phase} {seconds / whole:.0%}" for phase, seconds in phases.items())
    return f"{shares} of {whole:.1f} episode-seconds ({bound(phases)}-bound)"
