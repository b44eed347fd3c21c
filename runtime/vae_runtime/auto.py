"""``backend="auto"``: the fastest available (backend, graphs, precision) for this machine,
per graph, within the model's quality budget, chosen by a short measured probe.

The candidates are the contenders of ``vae-run bench --compare`` (contenders.py): ONNX
Runtime on the fp32 graphs and on each CPU variant; OpenVINO, where installed, on the fp32
graphs at f32 and (where its CPU plugin has it) bf16, and on the int8 variant with static
batch shapes. Each has a quality cost in test negative ELBO nats per image (:func:`cost`):
0 for the fp32 graphs at f32, a variant's change as its manifest records it, and for bf16
the budget its test enforces on every shipped model (engine_parity.BF16_MAX_NELBO_CHANGE).
A plan may use several candidates (e.g. one for the encoder, another for the decoder);
their costs add, and their sum must stay within ``max_nelbo_change`` (default
DEFAULT_MAX_NELBO_CHANGE, the int8 variant's own budget).

The probe runs every candidate's graphs, alternating, at batch 1 and at the model's batch
size (at most PROBE_LARGE rows), and counts images per CPU-second of this process (wall
time on a shared machine measures the neighbours). :func:`choose` then takes, among the
sets of candidates within budget, the one whose fastest member per (graph, batch regime)
is fastest in total; a graph whose small- and large-batch picks differ gets both, behind a
runner that sends batches of up to SMALL_BATCH rows to the one and larger batches to the
other. What was picked, and the figures it was picked on, are in ``VAE.info["auto"]``.

The default stays plain ONNX Runtime fp32: auto's numbers differ from it (by the cost
above), and its probe costs about 2 CPU-seconds at load (docs/performance.md).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from vae_format import Manifest

from .contenders import ROLES, Contender, engine_contenders, engine_for, feeds_for, rates
from .engines import GraphRunner
from .errors import InputError

NAME = "auto"
DEFAULT_MAX_NELBO_CHANGE = 1.0  # nats per image: the int8 variant's budget (model-format.md)
BF16_COST = 0.5  # engine_parity.BF16_MAX_NELBO_CHANGE, not imported: it pulls in the parity code
SMALL_BATCH = 8  # up to this many rows a call is latency-bound: the batch-1 ranking applies
PROBE_LARGE = 128  # the large-batch probe's rows at most (ORT runs 128 rows per run anyway)
TIE = 0.10  # the probe's noise on a loaded machine: rates this close count as equal
OPTIONS = ("max_nelbo_change", "probe_seconds")
Regime = str  # "small" (batch <= SMALL_BATCH) or "large"
Figures = Mapping[tuple[Contender, str, Regime], float]  # images per CPU-second


def cost(c: Contender, manifest: Manifest) -> float:
    """Contender ``c``'s quality cost: its change in test negative ELBO, nats per image."""
    if c.variant is not None:
        entry = manifest.raw["variants"][c.variant]
        recorded = entry.get("quality", {}).get("change", entry.get("max_nelbo_change"))
        return float(recorded) if recorded is not None else float("inf")
    return BF16_COST if c.precision == "bf16" else 0.0


def plan_cost(used: Iterable[Contender], costs: Mapping[Contender, float]) -> float:
    """The quality cost of running ``used`` together: each (graphs, precision) counted once
    (ONNX Runtime and OpenVINO running the same int8 graphs cost the variant's change once)."""
    by_arithmetic = {(c.variant, c.precision): costs[c] for c in used}
    return sum(by_arithmetic.values())


def choose(
    figures: Figures, costs: Mapping[Contender, float], budget: float, tie: float = TIE
) -> dict[tuple[str, Regime], Contender]:
    """(graph, regime) -> the contender to run it, from measured ``figures`` (contenders in
    order of preference, ONNX Runtime fp32 first). For each set of contenders whose
    plan_cost is within ``budget``: per (graph, regime) the first member within ``tie`` of
    the set's fastest there; score: the plan's total time relative to the fastest overall.
    The best score wins, but a plan that needs more backends than the best so far must
    score better by ``tie`` / (number of slots), i.e. be ``tie`` faster on one (graph,
    regime) at least: differences within the probe's noise bring in no other engine."""
    slots = sorted({(role, regime) for (_, role, regime) in figures})
    found = list(dict.fromkeys(c for (c, _, _) in figures))
    best_rate = {s: max(figures[(c, *s)] for c in found) for s in slots}
    best_plan: dict[tuple[str, Regime], Contender] = {}
    best_score, best_backends = float("inf"), 0
    for size in range(1, len(found) + 1):
        for subset in itertools.combinations(found, size):
            if plan_cost(subset, costs) > budget:
                continue
            plan = {}
            for s in slots:
                top = max(figures[(c, *s)] for c in subset)
                plan[s] = next(c for c in subset if figures[(c, *s)] >= (1 - tie) * top)
            if len(set(plan.values())) < size:
                continue  # a smaller set gives this plan
            score = sum(best_rate[s] / figures[(plan[s], *s)] for s in slots)
            backends = len({c.backend for c in plan.values()})
            margin = (1 - tie / len(slots)) if backends > best_backends else 1 - 1e-9
            if score < best_score * margin:
                best_plan, best_score, best_backends = plan, score, backends
    if not best_plan:
        raise InputError(f"backend 'auto': no candidate fits max_nelbo_change={budget}")
    return best_plan


class ByBatch:
    """Two runners of one graph: batches up to ``small_max`` rows go to ``small``, larger
    ones to ``large``. Both were checked against the contract on load."""

    def __init__(self, small: GraphRunner, large: GraphRunner, small_max: int) -> None:
        self.small, self.large, self.small_max = small, large, small_max
        self.inputs, self.outputs, self.metadata = large.inputs, large.outputs, large.metadata

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list:
        rows = len(next(iter(feeds.values())))
        runner = self.small if rows <= self.small_max else self.large
        return runner.run(output_names, feeds)

    def describe(self) -> dict[str, Any]:
        return {"small_batches": self.small.describe(), "large_batches": self.large.describe()}


@dataclass
class Plan:
    """What auto chose: a runner per graph, and the facts for ``VAE.info``."""

    runners: dict[str, GraphRunner]
    files: dict[str, list[str]]
    facts: dict[str, Any]


class AutoEngine:
    """Stands in for an engine in ``VAE.info`` / ``runs_on``: says what auto chose."""

    name = NAME

    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts

    def describe(self) -> dict[str, Any]:
        return {"auto": self.facts}


def check_options(options: Mapping[str, Any]) -> tuple[float, float]:
    """(max_nelbo_change, probe_seconds) from auto's ``engine_options``."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(
            f"backend 'auto' has no option {', '.join(unknown)}; its options: {', '.join(OPTIONS)}"
        )
    budget = options.get("max_nelbo_change", DEFAULT_MAX_NELBO_CHANGE)
    seconds = options.get("probe_seconds", 0.03)
    for name, value in (("max_nelbo_change", budget), ("probe_seconds", seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise InputError(f"backend 'auto': {name} must be a number >= 0, got {value!r}")
    return float(budget), float(seconds)


def candidates(manifest: Manifest, variant: str | None) -> list[Contender]:
    """Every engine contender on this machine; only ``variant``'s graphs if one is named."""
    found = engine_contenders(manifest)
    return found if variant is None else [c for c in found if c.variant == variant]


def probe(
    runners: Mapping[Contender, dict[str, GraphRunner]],
    latent_dim: int,
    batch: int,
    seconds: float,
    rounds: int = 3,
) -> dict[tuple[Contender, str, Regime], float]:
    """Images per CPU-second of every contender's graphs at batch 1 ("small") and at
    ``batch`` ("large"), median of ``rounds`` alternating rounds of ``seconds`` each."""
    large = min(batch, PROBE_LARGE)
    sizes = {"small": 1, "large": large} if batch > SMALL_BATCH else {"small": batch}
    figures = {}
    for regime, b in sizes.items():
        feeds = feeds_for(b, latent_dim)
        for role in ROLES:
            calls = {c: partial(r[role].run, None, feeds[role]) for c, r in runners.items()}
            got: dict[Contender, list[float]] = {c: [] for c in calls}
            for _ in range(rounds):
                for c, call in calls.items():
                    got[c].append(rates(call, b, seconds)[1])
            for c, per_cpu in got.items():
                figures[(c, role, regime)] = statistics.median(per_cpu)
    if "large" not in sizes:  # one regime only: the batch size is small
        figures.update({(c, r, "large"): v for (c, r, _), v in list(figures.items())})
    return figures


def plan(
    manifest: Manifest,
    variant: str | None,
    threads: int | None,
    batch: int,
    ort_options: dict[str, Any],
    options: Mapping[str, Any],
    load: Callable[[Any, str, str | None], GraphRunner],
) -> Plan:
    """Probe, choose and keep the chosen runners. ``load(engine, role, variant)`` loads one
    verified graph and checks it against the contract (the VAE's own loader)."""
    if ort_options.get("providers") is not None:
        raise InputError(
            "backend 'auto' chooses among CPU engines; drop providers, or use "
            "backend='onnxruntime' for another execution provider"
        )
    budget, seconds = check_options(options)
    found = candidates(manifest, variant)
    costs = {c: cost(c, manifest) for c in found}
    found = [c for c in found if costs[c] <= budget]
    if not found:
        raise InputError(f"backend 'auto': no candidate fits max_nelbo_change={budget}")
    runners = {}
    for c in found:
        engine = engine_for(c, manifest, threads, ort_options)
        runners[c] = {role: load(engine, role, c.variant) for role in ROLES}
    figures = probe(runners, manifest.latent_dim, batch, seconds)
    picked = choose(figures, costs, budget)
    chosen: dict[str, GraphRunner] = {}
    files: dict[str, list[str]] = {}
    for role in ROLES:
        small, large = picked[(role, "small")], picked[(role, "large")]
        graphs = manifest.graph_files
        files[role] = list(
            dict.fromkeys([graphs(small.variant)[role], graphs(large.variant)[role]])
        )
        if small == large:
            chosen[role] = runners[large][role]
        else:
            chosen[role] = ByBatch(runners[small][role], runners[large][role], SMALL_BATCH)
    used = set(picked.values())
    facts = {
        "picked": {
            role: {f"batch <= {SMALL_BATCH}": picked[(role, "small")].label,
                   f"batch > {SMALL_BATCH}": picked[(role, "large")].label}
            for role in ROLES
        },
        "nelbo_cost": round(plan_cost(used, costs), 4),
        "max_nelbo_change": budget,
        "probe": {
            c.label: {f"{role} {regime}": round(figures[(c, role, regime)])
                      for role in ROLES for regime in ("small", "large")}
            for c in found
        },
        "measured": f"images per CPU-second, batch 1 (small) and {min(batch, PROBE_LARGE)} "
        "(large), median of 3 alternating rounds",
    }  # fmt: skip
    return Plan(chosen, files, facts)


def summary(facts: Mapping[str, Any]) -> str:
    """One line for people: what runs each graph, and the quality cost."""
    picks = []
    for role, by_batch in facts["picked"].items():
        labels = list(dict.fromkeys(by_batch.values()))
        text = (
            labels[0] if len(labels) == 1 else ", ".join(f"{v} ({k})" for k, v in by_batch.items())
        )
        picks.append(f"{role} {text}")
    return (
        f"{'; '.join(picks)}; test negative ELBO cost {facts['nelbo_cost']:g} of "
        f"{facts['max_nelbo_change']:g} nats"
    )
