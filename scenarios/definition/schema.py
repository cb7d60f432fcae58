"""Scenario file schema: one frozen model per TOML section, every field documented.

Pydantic is used for this layer only (``extra="forbid"``: a typo is an error, not a
silently ignored key). ``loader.load_scenario`` turns its errors into lines naming
file, field path, value and rule. Field descriptions feed ``docs/scenario.md``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from peergrid.agents.aggregation import Aggregation
from peergrid.agents.names import ALGORITHMS  # noqa: F401  (re-exported)
from peergrid.agents.exchange import Codec, Exchange, ExchangeFaults, Outage, StepWindow
from peergrid.agents.learners.config import LearnerConfig
from peergrid.agents.prosumer import INVERTER_KVA_PER_KW

Hourly = float | list[float]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ScenarioMeta(_Section):
    id: str = Field(description="Scenario id; suffix _vN when its meaning changes.")
    seed: int = Field(ge=0, description="Root seed; every random draw is spawned from it.")
    start: dt.date = Field(description="First simulated day (profile year 2016).")
    days: int = Field(default=7, ge=1, le=366, description="Default number of simulated days.")
    step_min: int = Field(default=60, description="Round length in minutes (15, 30 or 60).")

    @field_validator("step_min")
    @classmethod
    def _step_divides_hour(cls, v: int) -> int:
        if v not in (15, 30, 60):
            raise ValueError("must be 15, 30 or 60 (profiles are 15-minute data)")
        return v


PER_PHASE_FEEDERS = ("ieee13",)
"""Feeders with a per-phase model (the others are balanced networks)."""


class FeederConfig(_Section):
    name: Literal["ieee13", "case33bw", "dickert_lv"] = Field(
        default="ieee13",
        description="Feeder: ieee13 (IEEE 13-node), case33bw (Baran-Wu 33-bus), "
        "dickert_lv (Dickert LV residential feeder, 120 load buses). See docs/feeder.md.",
    )
    model: Literal["per_phase", "balanced"] | None = Field(
        default=None,
        description="per_phase: every phase a node, the published phase impedance matrices, "
        "one- and two-phase laterals as they are (ieee13 only); balanced: the "
        "positive-sequence equivalent. Default: per_phase on ieee13, balanced on the others.",
    )
    capacitors: bool = Field(
        default=False,
        description="Keep the feeder's fixed shunt capacitors (ieee13: 600 kvar at 675, "
        "100 kvar at 611). Off: with them the lightly loaded feeder exceeds 1.05 pu on its "
        "own, a violation no agent causes.",
    )
    slack_vm_pu: float = Field(
        default=1.0, gt=0.8, lt=1.2,
        description="Voltage held at the slack bus (regulator output with a fixed tap), pu.",
    )
    vm_min_pu: float = Field(default=0.95, gt=0, description="Lower voltage limit, pu.")
    vm_max_pu: float = Field(default=1.05, gt=0, description="Upper voltage limit, pu.")
    voltage_penalty_per_pu: float = Field(
        default=10000.0, ge=0,
        description="Penalty (currency) per pu of voltage-limit violation at a bus per "
        "round, charged once and shared (grid/penalty.py).",
    )
    line_penalty_per_pu: float = Field(
        default=1000.0, ge=0,
        description="Penalty (currency) per pu of line loading above 100 % of the rating "
        "per round, charged once and shared among the agents downstream.",
    )
    penalty_scope: Literal["bus", "feeder"] = Field(
        default="bus",
        description="bus: a violation at an electrical node (buses joined by a switch, "
        "and dead ends without agents, are one) is charged once and shared among the agents "
        "at it, or, at a node without agents, those downstream of it (by export for over-, "
        "by import for under-voltage); a line's overload among the agents downstream of it; "
        "feeder: the feeder's total is shared equally.",
    )
    solver: Literal["fast", "pandapower"] = Field(
        default="fast",
        description="Power-flow solver: fast (batched Z-bus fixed point, ~100 µs a round) or "
        "pandapower (runpp, the reference; balanced model only).",
    )

    @model_validator(mode="before")
    @classmethod
    def _feeder_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("model") is None:
            data = {**data, "model": "per_phase"
                    if data.get("name", "ieee13") in PER_PHASE_FEEDERS else "balanced"}
        return data

    @model_validator(mode="after")
    def _limits_ordered(self) -> FeederConfig:
        if self.vm_min_pu >= self.vm_max_pu:
            raise ValueError(f"vm_min_pu = {self.vm_min_pu} must be below vm_max_pu = {self.vm_max_pu}")
        if self.model == "per_phase" and self.name not in PER_PHASE_FEEDERS:
            raise ValueError(f"model = 'per_phase': feeder {self.name!r} has no per-phase "
                             "model (use 'balanced')")
        if self.model == "per_phase" and self.solver == "pandapower":
            raise ValueError("solver = 'pandapower' needs model = 'balanced': pandapower's "
                             "three-phase power flow cannot represent untransposed lines (the "
                             "fast per-phase solver is checked against it on transposed ones)")
        if self.capacitors and self.name != "ieee13":
            raise ValueError(f"capacitors = true: feeder {self.name!r} has no capacitors")
        return self


class TariffConfig(_Section):
    retail_price_per_kwh: Hourly = Field(
        description="λ_buy: one price, or 24 hourly prices (time of use), currency/kWh."
    )
    feed_in_price_per_kwh: Hourly = Field(
        description="λ_sell: one price or 24 hourly prices; below retail at every hour."
    )

    @field_validator("retail_price_per_kwh", "feed_in_price_per_kwh")
    @classmethod
    def _hourly_shape(cls, v: Hourly) -> Hourly:
        values = v if isinstance(v, list) else [v]
        if isinstance(v, list) and len(v) != 24:
            raise ValueError(f"a list must hold 24 hourly prices, got {len(v)}")
        for x in values:
            if not x >= 0 or x == float("inf"):
                raise ValueError(f"prices must be finite and >= 0, got {x}")
        return v

    def hourly(self) -> tuple[list[float], list[float]]:
        """(retail, feed-in) as 24 hourly prices."""
        def expand(v: Hourly) -> list[float]:
            return list(v) if isinstance(v, list) else [float(v)] * 24
        return expand(self.retail_price_per_kwh), expand(self.feed_in_price_per_kwh)

    @model_validator(mode="after")
    def _feed_in_below_retail(self) -> TariffConfig:
        retail, feed_in = self.hourly()
        for h, (r, f) in enumerate(zip(retail, feed_in, strict=True)):
            if f >= r:
                raise ValueError(f"hour {h}: feed_in_price_per_kwh = {f} must be below retail = {r}")
        return self


class ProfileConfig(_Section):
    source: Literal["simbench"] = Field(
        default="simbench",
        description="Profile data set: SimBench 2016 household (H0-*) and PV (PV1-PV8) profiles.",
    )


class AgentConfig(_Section):
    id: str = Field(min_length=1, description="Agent id, unique.")
    bus: str = Field(description="Feeder bus name the agent is connected to.")
    phases: str | None = Field(
        default=None,
        description="Phases it is connected to on a per-phase feeder (\"c\", \"bc\", "
        "\"abc\"), its power split equally; None = every phase of its bus.",
    )
    load_profile: str = Field(description="Load profile name, e.g. H0-A.")
    load_peak_kw: float = Field(ge=0, description="Annual peak of the round-average load, kW.")
    power_factor: float = Field(
        default=0.95, gt=0, le=1, description="Lagging power factor of the load."
    )
    pv_profile: str | None = Field(default=None, description="PV profile (PV1-PV8); None = no PV.")
    pv_kwp: float = Field(default=0.0, ge=0, description="Installed PV, kWp.")
    battery_kwh: float = Field(default=0.0, ge=0, description="Usable battery capacity, kWh.")
    battery_kw: float = Field(default=0.0, ge=0, description="Charge and discharge power limit, kW.")
    pv_inverter_kva: float | None = Field(
        default=None, ge=0,
        description="PV inverter rating, kVA; None = 1.1 x pv_kwp (IEEE 1547-2018 category B: "
        "0.44 pu reactive power at rated active power).",
    )
    battery_inverter_kva: float | None = Field(
        default=None, ge=0, description="Battery inverter rating, kVA; None = 1.1 x battery_kw.",
    )
    inverter_control: Literal["setpoint", "volt_var"] = Field(
        default="setpoint",
        description="setpoint: reactive power is the agent's action; volt_var: the inverters "
        "follow the IEEE 1547-2018 default volt-var curve, settled with the power flow "
        "(`--policy voltvar` sets it for every agent).",
    )
    eta_charge: float = Field(default=0.95, gt=0, le=1, description="Charging efficiency.")
    eta_discharge: float = Field(default=0.95, gt=0, le=1, description="Discharging efficiency.")
    soc_min: float = Field(default=0.1, ge=0, le=1, description="Lowest state of charge.")
    soc_max: float = Field(default=0.9, ge=0, le=1, description="Highest state of charge.")
    soc_init: float = Field(default=0.5, ge=0, le=1, description="State of charge at the start.")

    @model_validator(mode="before")
    @classmethod
    def _inverter_ratings(cls, data: Any) -> Any:
        """Resolve default inverter ratings so the manifest shows the values used."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for field, rating in (("pv_inverter_kva", "pv_kwp"), ("battery_inverter_kva", "battery_kw")):
            value = data.get(rating, 0.0)
            if data.get(field) is None and isinstance(value, (int, float)):
                data[field] = round(INVERTER_KVA_PER_KW * value, 9)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AgentConfig:
        if self.phases is not None and (
                not self.phases or len(set(self.phases)) != len(self.phases)
                or not set(self.phases) <= set("abc")):
            raise ValueError(f"phases = {self.phases!r}: distinct letters of 'abc'")
        if self.battery_inverter_kva is not None and self.battery_inverter_kva < self.battery_kw:
            raise ValueError(f"battery_inverter_kva = {self.battery_inverter_kva} is below "
                             f"battery_kw = {self.battery_kw}")
        if self.pv_kwp > 0 and self.pv_profile is None:
            raise ValueError(f"pv_kwp = {self.pv_kwp} needs a pv_profile")
        if not self.soc_min <= self.soc_init <= self.soc_max:
            raise ValueError(
                f"soc_init = {self.soc_init} must lie in [soc_min, soc_max] = "
                f"[{self.soc_min}, {self.soc_max}]"
            )
        if (self.battery_kwh > 0) != (self.battery_kw > 0):
            raise ValueError(
                f"battery_kwh = {self.battery_kwh} and battery_kw = {self.battery_kw}: "
                "give both or neither"
            )
        return self


DEFAULT_LOAD_PROFILES = ["H0-A", "H0-B", "H0-C", "H0-G", "H0-L"]  # H0-H: see docs/data.md
DEFAULT_PV_PROFILES = ["PV1", "PV2", "PV3", "PV4", "PV5", "PV6", "PV7", "PV8"]


class PlacementConfig(_Section):
    """Agents generated on the feeder's load buses (instead of ``[[agents]]``)."""

    count: int | None = Field(
        default=None, ge=1,
        description="Number of agents; None = one per load bus, fewer = a seeded sample of them.",
    )
    load_scale: float | Literal["design_peak"] = Field(
        default="design_peak",
        description="Agent's annual peak load = load_scale x the bus's base load; "
        "\"design_peak\": the scale at which the community's coincident peak over every "
        "window the scenario uses (training, validation and [scenario]) equals the "
        "feeder's design load (docs/feeder.md).",
    )
    load_profiles: list[str] = Field(
        default=DEFAULT_LOAD_PROFILES, min_length=1,
        description="Household profiles drawn from (uniformly, seeded).",
    )
    pv_share: float = Field(default=0.6, ge=0, le=1, description="Share of agents with PV.")

    @field_validator("load_scale")
    @classmethod
    def _positive_scale(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and not 0 < v < float("inf"):
            raise ValueError(f"must be a positive number or 'design_peak', got {v}")
        return v

    pv_profiles: list[str] = Field(
        default=DEFAULT_PV_PROFILES, min_length=1, description="PV profiles drawn from."
    )
    pv_kwp_per_peak_kw: float = Field(default=1.5, ge=0, description="PV size per kW of peak load.")
    battery_share: float = Field(
        default=0.6, ge=0, le=1, description="Share of the PV agents that also have a battery."
    )
    battery_kwh_per_peak_kw: float = Field(
        default=2.0, ge=0, description="Battery capacity per kW of peak load, kWh."
    )
    battery_c_rate: float = Field(
        default=0.25, gt=0, le=4, description="Battery power limit per kWh of capacity, 1/h."
    )


class StepWindowConfig(_Section):
    start_step: int = Field(ge=0, description="First consensus step (counted over the run).")
    end_step: int = Field(ge=0, description="Last consensus step (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> StepWindowConfig:
        if self.end_step < self.start_step:
            raise ValueError(f"end_step = {self.end_step} is before start_step = "
                             f"{self.start_step}")
        return self


class OutageConfig(StepWindowConfig):
    agent: str = Field(description="The agent off the network (it sends and hears nothing).")


class ExchangeFaultsConfig(_Section):
    """Faults of the consensus exchange, drawn from the run's seed per link and step
    (agents.exchange); a deployment applies them on top of [deploy]'s link faults."""

    loss: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False,
                        description="Probability that a consensus message is lost.")
    staleness: int = Field(default=0, ge=0, description="Consensus steps by which every "
                           "neighbour's vector is late (a delay).")
    edge_up: float = Field(default=1.0, ge=0, le=1, allow_inf_nan=False,
                           description="Probability that a graph edge is present at a step "
                           "(a time-varying graph); absent, it carries nothing either way.")
    partitions: list[StepWindowConfig] = Field(
        default=[], description="Step windows in which the two halves of the graph "
        "(a Kernighan-Lin bisection) cannot hear each other.")
    outages: list[OutageConfig] = Field(
        default=[], description="An agent off the network for a step window.")


class CommsConfig(_Section):
    topology: Literal["complete", "ring", "line", "star", "random_geometric", "feeder"] = Field(
        default="ring", description="Communication graph for consensus (used by learning)."
    )
    allow_disconnected: bool = Field(
        default=False, description="Accept a disconnected graph (consensus then splits)."
    )
    aggregation: Literal["metropolis", "trimmed-mean", "median", "clip"] = Field(
        default="metropolis",
        description="How an agent combines its neighbours' critic and estimator parameters: "
        "the Metropolis average (Zhang et al.), or a rule robust to a lying neighbour "
        "(coordinate-wise trimmed mean or median, or clipping each neighbour's difference "
        "from the agent's own vector to clip_radius). docs/learning.md.",
    )
    trim: int = Field(default=1, ge=1,
                      description="trimmed-mean: values dropped at each end, per coordinate.")
    clip_radius: float = Field(default=1.0, gt=0, allow_inf_nan=False,
                               description="clip: the largest distance a neighbour's vector "
                               "may pull from the agent's own, in parameter units.")

    codec: Literal["float32", "float16", "int8", "topk"] = Field(
        default="float32",
        description="How a consensus vector travels: exact float32, float16, int8 with one "
        "scale per tensor, or topk (a whole vector every keyframe_every steps, in between "
        "the topk_fraction largest entries of its difference from it). docs/learning.md.")
    topk_fraction: float = Field(default=0.1, gt=0, le=1, allow_inf_nan=False,
                                 description="topk: share of the entries sent between keyframes.")
    keyframe_every: int = Field(default=10, ge=1,
                                description="topk: consensus steps between whole vectors.")
    faults: ExchangeFaultsConfig = Field(
        default_factory=ExchangeFaultsConfig,
        description="What the network does to the consensus exchange, the same in process "
        "and deployed ([comms.faults]).")

    def aggregation_rule(self) -> Aggregation:
        return Aggregation(self.aggregation, self.trim, self.clip_radius)

    def exchange(self, seed: int, half: dict[str, int]) -> Exchange:
        """The exchange of a run with ``seed`` on a graph split into ``half``."""
        f = self.faults
        return Exchange(
            ExchangeFaults(f.loss, f.staleness, f.edge_up,
                           tuple(StepWindow(w.start_step, w.end_step) for w in f.partitions),
                           tuple(Outage(o.agent, o.start_step, o.end_step) for o in f.outages)),
            Codec(self.codec, self.topk_fraction, self.keyframe_every), seed, half)


class PartitionConfig(_Section):
    a: str = Field(description="One end: an agent id, 'market' or 'grid'.")
    b: str = Field(description="The other end.")
    start_round: int = Field(ge=0, description="First global round (day x rounds + round) cut.")
    end_round: int = Field(ge=0, description="Last global round cut (inclusive).")

    @model_validator(mode="after")
    def _window(self) -> PartitionConfig:
        if self.end_round < self.start_round:
            raise ValueError(f"end_round = {self.end_round} is before start_round = "
                             f"{self.start_round}")
        if self.a == self.b:
            raise ValueError(f"a = b = {self.a!r}: a partition cuts a link between two nodes")
        return self


class KillConfig(_Section):
    agent: str = Field(description="Agent whose process is killed.")
    at_round: int = Field(ge=0, description="Global round at whose start it is killed.")
    restart_round: int | None = Field(
        default=None, ge=0,
        description="Global round before which it is restarted from its checkpoint "
        "(None: stays down).",
    )

    @model_validator(mode="after")
    def _restart_after_kill(self) -> KillConfig:
        if self.restart_round is not None and self.restart_round <= self.at_round:
            raise ValueError(f"restart_round = {self.restart_round} must come after "
                             f"at_round = {self.at_round}")
        return self


class DeployConfig(_Section):
    """The distributed runtime (`peergrid deploy`): endpoints, deadlines and faults."""

    host: str = Field(default="127.0.0.1", description="Interface the operators bind to.")
    base_port: int = Field(
        default=27100, ge=1024, le=65000,
        description="Inbox (ROUTER) ports: market = base, grid = base+1, agent i = base+10+i. "
        "The default stays below Linux's ephemeral range (32768+).",
    )
    bid_deadline_ms: float = Field(
        default=2000.0, gt=0,
        description="The market clears with the bids it has when this expires.",
    )
    signal_timeout_ms: float = Field(
        default=2000.0, gt=0,
        description="An agent that has not heard its settlement or the voltages by then "
        "books the round without them (grid-only / last known voltage, flagged).",
    )
    consensus_timeout_ms: float = Field(
        default=2000.0, gt=0,
        description="Critics of neighbours that have not arrived by then are left out.",
    )
    heartbeat_ms: float = Field(
        default=500.0, gt=0, description="Every node and the market tell each other they are "
        "alive this often.")
    down_after_ms: float = Field(
        default=3000.0, gt=0,
        description="The market marks a node down after this much silence: nobody waits "
        "for it, its rounds are booked grid-only (flagged down) until it is heard again.")
    idle_exit_ms: float = Field(
        default=30000.0, gt=0,
        description="A node that has not heard the market this long exits (so nodes "
        "started by hand do not outlive their market).")
    restart_budget: int = Field(
        default=3, ge=0, description="Restarts the launcher gives each node that dies "
        "unscheduled (any cause), from its checkpoint.")
    restart_backoff_ms: float = Field(
        default=500.0, ge=0, description="Wait before the first restart; doubled each time.")
    latency_ms: float = Field(default=0.0, ge=0, description="Mean one-way latency, every link.")
    jitter_ms: float = Field(
        default=0.0, ge=0, description="Std of a normal jitter on the latency (clipped at 0)."
    )
    drop: float = Field(default=0.0, ge=0, le=1, description="Probability a message is lost.")
    partitions: list[PartitionConfig] = Field(default=[], description="Links cut for a time.")
    kills: list[KillConfig] = Field(default=[], description="Processes killed and restarted.")


AlgoName = Literal["consensus", "consensus-critic", "ippo", "mappo", "maddpg"]


class LearnerOverrides(_Section):
    """One algorithm's own hyper-parameters (`[algo.overrides.<name>]`); unset fields keep
    the `[algo]` value."""

    gamma: float | None = Field(default=None, gt=0, le=1, description="Discount factor.")
    lr_actor: float | None = Field(default=None, gt=0, description="Actor step size.")
    lr_critic: float | None = Field(default=None, gt=0, description="Critic step size.")
    hidden_sizes: list[int] | None = Field(default=None, description="Hidden layer widths.")
    rollout_days: int | None = Field(default=None, ge=1, description="PPO: episodes per update.")
    epochs: int | None = Field(default=None, ge=1, description="PPO: passes over a rollout.")
    minibatch: int | None = Field(default=None, ge=1, description="PPO: minibatch size.")
    clip: float | None = Field(default=None, gt=0, description="PPO: ratio clip.")
    gae_lambda: float | None = Field(default=None, ge=0, le=1, description="PPO: GAE lambda.")
    entropy_coef: float | None = Field(default=None, ge=0, description="PPO: entropy bonus.")
    init_log_std: float | None = Field(default=None, description="PPO: initial log std.")
    consensus_period: int | None = Field(default=None, ge=1,
                                         description="Epochs between consensus steps.")
    batch_size: int | None = Field(default=None, ge=1, description="MADDPG: minibatch size.")
    buffer_size: int | None = Field(default=None, ge=1, description="MADDPG: replay capacity.")
    tau: float | None = Field(default=None, gt=0, le=1, description="MADDPG: Polyak rate.")
    update_every: int | None = Field(default=None, ge=1,
                                     description="MADDPG: rounds between updates.")
    noise_start: float | None = Field(default=None, ge=0, description="MADDPG: initial noise.")
    noise_end: float | None = Field(default=None, ge=0, description="MADDPG: final noise.")


_LEARNER = LearnerConfig()  # the one definition of every learner default


class AlgoConfig(_Section):
    """Learning settings (`peergrid train`, `peergrid experiment`).

    Three disjoint windows: training days are drawn from ``train_start`` +
    ``train_days``; tuning and model selection look only at the validation window
    (``validation_start`` + ``validation_days``); the ``[scenario]`` window is the test
    window every report is measured on, and no choice looks at it."""

    name: AlgoName = Field(
        default="consensus",
        description="Learning algorithm (used by `peergrid train`): consensus (the paper's "
        "networked actor-critic), consensus-critic (critic averaging only), ippo, mappo "
        "(centralised critic, team reward), maddpg.",
    )
    train_start: dt.date = Field(
        default=dt.date(2016, 4, 11), description="First day of the training window.")
    train_days: int = Field(default=21, ge=1, le=366, description="Days in the training window.")
    validation_start: dt.date = Field(
        default=dt.date(2016, 5, 2),
        description="First day of the validation window (tuning, model selection).")
    validation_days: int = Field(default=7, ge=1, le=366,
                                 description="Days in the validation window.")
    episodes: int = Field(default=1000, ge=1, description="Training episodes (one day each).")
    episode_start: Literal["carry", "sample"] = Field(
        default="carry",
        description="State of charge a training day starts from: carry = where the previous "
        "training day ended (batteries are never refilled for free); sample = uniform in "
        "[soc_min, soc_max], from the env's seeded generator.",
    )
    eval_every: int = Field(
        default=100, ge=1,
        description="Episodes between evaluations on the validation window; the checkpoint "
        "with the best validation team reward is the run's policy.")
    gamma: float = Field(default=_LEARNER.gamma, gt=0, le=1, description="Discount factor.")
    lr_actor: float = Field(default=_LEARNER.lr_actor, gt=0, description="Actor step size.")
    lr_critic: float = Field(default=_LEARNER.lr_critic, gt=0,
                             description="Critic step size (faster timescale).")
    lr_anneal: bool = Field(
        default=True,
        description="Decay both step sizes linearly to 0 over algo.episodes (also when "
        "`--episodes` stops a run earlier or later).",
    )
    hidden_sizes: list[int] = Field(default=list(_LEARNER.hidden_sizes),
                                    description="Hidden layer widths.")
    rollout_days: int = Field(
        default=4, ge=1, description="PPO: episodes collected per update."
    )
    epochs: int = Field(default=_LEARNER.epochs, ge=1,
                        description="PPO: passes over each rollout.")
    minibatch: int = Field(default=_LEARNER.minibatch, ge=1, description="PPO: minibatch size.")
    clip: float = Field(default=_LEARNER.clip, gt=0, description="PPO: ratio clip.")
    gae_lambda: float = Field(default=_LEARNER.gae_lambda, ge=0, le=1,
                              description="PPO: GAE lambda.")
    entropy_coef: float = Field(default=_LEARNER.entropy_coef, ge=0,
                                description="PPO: entropy bonus.")
    init_log_std: float = Field(default=_LEARNER.init_log_std,
                                description="PPO: initial log std of actions.")
    consensus_period: int = Field(
        default=_LEARNER.consensus_period, ge=1,
        description="Consensus: epochs between consensus (averaging) steps.",
    )
    batch_size: int = Field(default=_LEARNER.batch_size, ge=1,
                            description="MADDPG: replay minibatch size.")
    buffer_size: int = Field(default=_LEARNER.buffer_size, ge=1,
                             description="MADDPG: replay capacity (rounds).")
    tau: float = Field(default=_LEARNER.tau, gt=0, le=1,
                       description="MADDPG: target-network Polyak rate.")
    update_every: int = Field(default=_LEARNER.update_every, ge=1,
                              description="MADDPG: rounds between updates.")
    noise_start: float = Field(default=_LEARNER.noise_start, ge=0,
                               description="MADDPG: initial exploration std.")
    noise_end: float = Field(default=_LEARNER.noise_end, ge=0,
                             description="MADDPG: final exploration std.")
    overrides: dict[AlgoName, LearnerOverrides] = Field(
        default={}, description="Per-algorithm hyper-parameters, `[algo.overrides.<name>]` "
        "(e.g. MADDPG's own step sizes; written by `peergrid experiment tune`).")

    def for_algorithm(self, name: str) -> AlgoConfig:
        """These settings with ``name``'s overrides applied."""
        over = self.overrides.get(name)
        if over is None:
            return self
        return self.model_copy(update={k: v for k, v in over.model_dump().items()
                                       if v is not None})

    @model_validator(mode="after")
    def _windows_apart(self) -> AlgoConfig:
        train_end = self.train_start + dt.timedelta(days=self.train_days)
        val_end = self.validation_start + dt.timedelta(days=self.validation_days)
        if self.validation_start < train_end and self.train_start < val_end:
            raise ValueError(f"validation window {self.validation_start} + "
                             f"{self.validation_days} days overlaps the training window "
                             f"{self.train_start} + {self.train_days} days")
        return self


class Scenario(_Section):
    schema_version: Literal[1] = Field(
        description="Scenario file format version (required: a file of another version "
        "is refused rather than misread).")
    scenario: ScenarioMeta
    feeder: FeederConfig = FeederConfig()
    tariff: TariffConfig
    profiles: ProfileConfig = ProfileConfig()
    agents: list[AgentConfig] = Field(
        default=[], description="The agents; or leave out and give [placement]."
    )
    placement: PlacementConfig | None = Field(
        default=None, description="Generate agents on the feeder's load buses."
    )
    comms: CommsConfig = CommsConfig()
    algo: AlgoConfig = AlgoConfig()
    deploy: DeployConfig = DeployConfig()

    @model_validator(mode="after")
    def _unique_ids(self) -> Scenario:
        if not self.agents and self.placement is None:
            raise ValueError("give the agents as [[agents]] or generate them with [placement]")
        if self.agents and self.placement is not None:
            raise ValueError("give [[agents]] or [placement], not both")
        seen: set[str] = set()
        for i, a in enumerate(self.agents):
            if a.id in seen:
                raise ValueError(f"agents[{i}].id = {a.id!r}: duplicate agent id")
            seen.add(a.id)
        return self
