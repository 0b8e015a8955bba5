"""Strategy simulator: ``.venv/bin/python -m bench.strategies [--incidents 3000] [--seed 1]``.

Replays the same seeded incidents under each alerting strategy and prints one
Markdown table (the one in ``docs/strategies.md``). No database: the decisions are
the service's own functions (``Settings.batch`` and ``next_radius_m``,
``dispatch.roles.choose_role`` and ``should_stand_down``, ``dispatch.ems``), driven
by a discrete-event loop that does what the reply path and the worker do, at the
worker's 5-second timer granularity. Every strategy sees the same volunteers, the
same answers and the same ambulance (common random numbers), so differences between
rows are the strategy's, not the dice's.

The response model (sources in ``docs/strategies.md``):

- volunteers available at the moment of the arrest, per km², around a city centre:
  ``60·exp(−r / 4 km) + 1`` (a smaller stand-in for the benchmark's seeded
  Stockholm region), incidents drawn in proportion to that density;
- each alerted volunteer accepts with probability 0.30 (Heartrunner: 17–47 % of
  alerted volunteers respond), declines with 0.20 (assumption), else stays silent;
- reply delay: log-normal, median 45 s (accept) and 60 s (decline), σ 0.7
  (assumption); a responder leaves 60 s after accepting, which puts alert-to-
  departure at a median of about 1:45 min (turnout time, Ganter et al.,
  Resuscitation 2025);
- walking: straight line × ``ROUTE_FACTOR`` 1.4 at 1.8 m/s (dense-city median,
  Resuscitation 2020);
- ambulance: arrival log-normal, median 10 min, σ 0.35 (most Swedish OHCA
  responses fall in the 7–15 min bands of Holmén et al., JAHA 2020); the CAD's
  ETA errs by a log-normal factor, σ 0.2 (assumption);
- an AED within reach for 60 % of incidents (assumption), detours uniform 0–800 m.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.settings import Settings
from dispatch.ems import arrives_before_ems, ems_reach_m
from dispatch.roles import Slots, choose_role, should_stand_down

EPOCH = datetime(2026, 12, 1, tzinfo=UTC)
TICK_S = 5.0  # the worker's timer interval (dispatch.worker.TIMER_INTERVAL_S)
ACCEPT_P, DECLINE_P = 0.30, 0.20
ACCEPT_MEDIAN_S, DECLINE_MEDIAN_S, DELAY_SIGMA = 45.0, 60.0, 0.7
TURNOUT_AFTER_ACCEPT_S = 60.0
EMS_MEDIAN_S, EMS_SIGMA, ETA_ERROR_SIGMA = 600.0, 0.35, 0.2
AED_SHARE, AED_DETOUR_MAX_M = 0.6, 800.0
REGION_RADIUS_KM = 25.0
SIMULATED_DISC_M = 1500.0  # the widest step simulated


def density_per_km2(r_km: float) -> float:
    return 60.0 * math.exp(-r_km / 4.0) + 1.0


@dataclass(frozen=True)
class Volunteer:
    distance_m: float
    answer: str  # accept | decline | silent
    delay_s: float
    aed_detour_m: float


@dataclass(frozen=True)
class Scene:
    volunteers: list[Volunteer]  # nearest first
    ems_s: float
    eta_s: float
    has_aed: bool


def _poisson(rng: random.Random, mean: float) -> int:
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


def make_scenes(count: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    peak = density_per_km2(0.0)
    scenes = []
    while len(scenes) < count:
        r_km = REGION_RADIUS_KM * math.sqrt(rng.random())
        density = density_per_km2(r_km)
        if rng.random() * peak > density:
            continue  # incidents follow the population
        n = _poisson(rng, density * math.pi * (SIMULATED_DISC_M / 1000) ** 2)
        volunteers = []
        for _ in range(n):
            u = rng.random()
            answer = (
                "accept" if u < ACCEPT_P else "decline" if u < ACCEPT_P + DECLINE_P else "silent"
            )
            median = ACCEPT_MEDIAN_S if answer == "accept" else DECLINE_MEDIAN_S
            volunteers.append(
                Volunteer(
                    distance_m=SIMULATED_DISC_M * math.sqrt(rng.random()),
                    answer=answer,
                    delay_s=rng.lognormvariate(math.log(median), DELAY_SIGMA),
                    aed_detour_m=rng.uniform(0, AED_DETOUR_MAX_M),
                )
            )
        ems_s = rng.lognormvariate(math.log(EMS_MEDIAN_S), EMS_SIGMA)
        scenes.append(
            Scene(
                volunteers=sorted(volunteers, key=lambda v: v.distance_m),
                ems_s=ems_s,
                eta_s=ems_s * rng.lognormvariate(0.0, ETA_ERROR_SIGMA),
                has_aed=rng.random() < AED_SHARE,
            )
        )
    return scenes


@dataclass
class Alert:
    at_s: float
    replaced: bool = False
    response: str = "pending"
    role: str | None = None
    stood_down: bool = False


@dataclass
class Outcome:
    on_scene_before_ems: int
    late_arrivals: int
    first_accept_s: float | None
    alerts: int


@dataclass
class Run:
    """One incident under one strategy: the reply path and the worker's timers."""

    scene: Scene
    settings: Settings
    ems_rule: bool
    alerts: dict[int, Alert] = field(default_factory=dict)
    radius_m: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    first_accept_s: float | None = None
    events: list[tuple[float, int, str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.radius_m = self.settings.alert_radius_m
        self.eta_at = EPOCH + timedelta(seconds=self.scene.eta_s) if self.ems_rule else None

    def slots(self) -> Slots:
        roles = [alert.role for alert in self.alerts.values() if alert.role]
        aed_slots = self.settings.aed_responders if self.scene.has_aed else 0
        return Slots(
            cpr_open=self.settings.cpr_responders - roles.count("cpr"),
            aed_open=aed_slots - roles.count("aed"),
            cpr_taken=roles.count("cpr"),
        )

    def pending(self) -> list[int]:
        return [i for i, a in self.alerts.items() if a.response == "pending" and not a.stood_down]

    def top_up(self, now_s: float, *, limit: int | None = None) -> None:
        """``alert_more``: nearest not yet alerted within the radius (and EMS reach), capped."""
        if self.slots().full:
            return
        pending = self.pending()
        in_play = sum(1 for i in pending if not self.alerts[i].replaced) + sum(
            1 for a in self.alerts.values() if a.role and not a.stood_down
        )
        room = self.settings.max_alerted - len(pending)
        room = min(room, self.settings.batch - in_play if limit is None else limit)
        reach = ems_reach_m(
            self.settings, ems_eta_at=self.eta_at, now=EPOCH + timedelta(seconds=now_s)
        )
        radius = self.radius_m if reach is None else min(self.radius_m, reach)
        for index, volunteer in enumerate(self.scene.volunteers):
            if room <= 0 or volunteer.distance_m > radius:
                break
            if index in self.alerts:
                continue
            self.alerts[index] = Alert(at_s=now_s)
            room -= 1
            if volunteer.answer != "silent":
                self._at(now_s + volunteer.delay_s, "reply", index)
            if self.settings.replace_after is not None:
                self._at(
                    _tick(now_s + self.settings.replace_after.total_seconds()), "silence", index
                )

    def _at(self, when_s: float, kind: str, index: int) -> None:
        heapq.heappush(self.events, (when_s, len(self.events), kind, index))

    def reply(self, now_s: float, index: int) -> None:
        alert, volunteer = self.alerts[index], self.scene.volunteers[index]
        if alert.stood_down or alert.response != "pending":
            return
        if volunteer.answer == "decline":
            alert.response = "declined"
            self._stand_down_if_complete()
            if self.settings.alert_batch is not None:
                self.top_up(now_s)
            return
        alert.response = "accepted"
        via_aed = volunteer.distance_m + volunteer.aed_detour_m
        leaving = EPOCH + timedelta(seconds=now_s + TURNOUT_AFTER_ACCEPT_S)
        role = choose_role(
            self.slots(),
            detour_m=volunteer.aed_detour_m if self.scene.has_aed else None,
            settings=self.settings,
            aed_before_ems=arrives_before_ems(
                self.settings, route_m=via_aed, leaving_at=leaving, ems_eta_at=self.eta_at
            ),
        )
        if role is None:
            alert.stood_down = True
            return
        alert.role = role
        self.first_accept_s = self.first_accept_s if self.first_accept_s is not None else now_s
        route = via_aed if role == "aed" else volunteer.distance_m
        self.arrivals.append(now_s + TURNOUT_AFTER_ACCEPT_S + self.settings.walking_time_s(route))
        self._stand_down_if_complete()

    def _stand_down_if_complete(self) -> None:
        pending = self.pending()
        detours: list[float | None] = [
            self.scene.volunteers[i].aed_detour_m if self.scene.has_aed else None for i in pending
        ]
        if should_stand_down(self.slots(), pending_detours=detours, settings=self.settings):
            for i in pending:
                self.alerts[i].stood_down = True

    def silence(self, now_s: float, index: int) -> None:
        alert = self.alerts[index]
        if alert.response == "pending" and not alert.stood_down and not self.slots().full:
            alert.replaced = True
            self.top_up(now_s)

    def widen(self, now_s: float) -> None:
        next_radius = self.settings.next_radius_m(self.radius_m)
        if next_radius is None or self.slots().full:
            return
        self.radius_m = next_radius
        self.top_up(now_s)
        self._schedule_widening(now_s)

    def _schedule_widening(self, now_s: float) -> None:
        if self.settings.widen_after is not None:
            self._at(_tick(now_s + self.settings.widen_after.total_seconds()), "widen", -1)

    def play(self) -> Outcome:
        self.top_up(0.0, limit=self.settings.batch)
        self._schedule_widening(0.0)
        while self.events:
            when_s, _, kind, index = heapq.heappop(self.events)
            if when_s >= self.scene.ems_s:
                break  # the crew is there: the dispatcher sends "ems_arrived"
            if kind == "reply":
                self.reply(when_s, index)
            elif kind == "silence":
                self.silence(when_s, index)
            else:
                self.widen(when_s)
        return Outcome(
            on_scene_before_ems=sum(1 for t in self.arrivals if t < self.scene.ems_s),
            late_arrivals=sum(1 for t in self.arrivals if t >= self.scene.ems_s),
            first_accept_s=self.first_accept_s,
            alerts=len(self.alerts),
        )


def _tick(seconds: float) -> float:
    """The worker acts on the first timer pass at or after ``seconds``."""
    return math.ceil(seconds / TICK_S) * TICK_S


STRATEGIES: dict[str, dict[str, Any]] = {
    "30 at once (default)": {},
    "replace, batch 7": {"alert_batch": 7, "replace_after": timedelta(seconds=60)},
    "replace + widen": {
        "alert_batch": 7,
        "replace_after": timedelta(seconds=60),
        "widen_after": timedelta(seconds=120),
        "widen_steps_m": [1000, 1500],
    },
    "30 at once + widen": {"widen_after": timedelta(seconds=120), "widen_steps_m": [1000, 1500]},
}


def summarise(outcomes: list[Outcome]) -> dict[str, float]:
    on_scene = [o.on_scene_before_ems for o in outcomes]
    firsts = [o.first_accept_s for o in outcomes if o.first_accept_s is not None]
    return {
        "mean_on_scene": statistics.fmean(on_scene),
        "median_on_scene": statistics.median(on_scene),
        "share_any": sum(1 for n in on_scene if n > 0) / len(on_scene),
        "median_first_accept_s": statistics.median(firsts) if firsts else math.nan,
        "late_per_incident": statistics.fmean(o.late_arrivals for o in outcomes),
        "alerts_per_incident": statistics.fmean(o.alerts for o in outcomes),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    scenes = make_scenes(args.incidents, args.seed)
    print(
        f"{args.incidents} incidents, seed {args.seed}; volunteers within 500 m: median"
        f" {statistics.median(sum(1 for v in s.volunteers if v.distance_m <= 500) for s in scenes)}"
    )
    print()
    print(
        "| strategy | EMS rule | responders before EMS, mean | median | ≥ 1 before EMS"
        " | first acceptance, median | arrivals after EMS | alerts per incident |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, overrides in STRATEGIES.items():
        settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
        for ems_rule in (False, True):
            row = summarise([Run(scene, settings, ems_rule).play() for scene in scenes])
            print(
                f"| {name} | {'yes' if ems_rule else 'no'} | {row['mean_on_scene']:.2f}"
                f" | {row['median_on_scene']:.0f} | {row['share_any']:.1%}"
                f" | {row['median_first_accept_s']:.0f} s | {row['late_per_incident']:.2f}"
                f" | {row['alerts_per_incident']:.1f} |"
            )


if __name__ == "__main__":
    main()
