"""The prosumer process: comms.protocol.prosumer behind a socket."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from peergrid.comms.messages import SettlementMessage
from peergrid.comms.node import Node
from peergrid.comms.nodes.loop import Checkpoints, apply, serve
from peergrid.comms.protocol.prosumer import ProsumerProtocol, ProsumerState
from peergrid.comms.replica import Replica, node_tables
from peergrid.comms.runlog import RunWriter
from peergrid.comms.runtime import open_node
from peergrid.comms.spec import DeploySpec, Policy, ProsumerNode


def agent_policy(agent_id: str, node: ProsumerNode):
    """(act(obs) -> action, the learner if it learns online, else None)."""
    from peergrid.agents.policies import make_policy

    pol: Policy = node.policy
    if pol.kind == "reference":
        policy = make_policy(pol.name, node.spec, node.dt_h)
        return (lambda obs: policy(obs)), None
    if pol.kind == "online":
        from peergrid.agents.learners.ppo import PPOLearner

        learner = PPOLearner.from_init(pol.learner.learner_init(agent_id))
        return (lambda obs: learner.act(obs)), learner
    from peergrid.agents.learners.policyfile import load_policy

    # the policy `peergrid deploy` cut out of the run for this agent: a state file, which
    # loads without running code whoever wrote it
    trained = load_policy(pol.file)
    if pol.learn:
        return (lambda obs: trained.act(obs)), trained
    return (lambda obs: trained.act(obs, greedy=True)), None


def prosumer_protocol(spec: DeploySpec, agent_id: str, incarnation: int = 0,
                      state: ProsumerState | None = None, finish: bool = False,
                      pid: int = 0) -> ProsumerProtocol:
    """One agent's protocol object from its part of the spec alone."""
    from peergrid.agents.prosumer import Prosumer
    from peergrid.agents.public import initial_outcome

    node = spec.prosumers[agent_id]
    m = node.market
    public = initial_outcome(len(m.all_nodes), m.retail[0], m.feed_in[0], node.slack_vm_pu)
    prosumer = Prosumer(node.spec, np.asarray(node.load_kw, dtype=float),
                        np.asarray(node.pv_kw, dtype=float), node.dt_h, node.initial_signals,
                        public)
    act, learner = agent_policy(agent_id, node)
    return ProsumerProtocol(agent_id, prosumer, act, spec.window.window(), m,
                            spec.prosumer_timing(), learner,
                            node.learning if learner is not None else None,
                            incarnation=incarnation, state=state, finish=finish, pid=pid)


def run_prosumer(spec: DeploySpec, agent_id: str, incarnation: int = 0,
                 finish: bool = False, key_file: str | None = None,
                 node: Node | None = None, replica: Replica | None = None) -> None:
    """Serve one agent until the market says stop (or falls silent). ``finish``: the run
    is over and this agent was down at its end: book what remains from its checkpoint
    and the market's ledger file, then exit. ``node``: its shell already open
    (comms.raylaunch binds before the spec is whole)."""
    node = node or open_node(spec, agent_id, key_file)
    writer = RunWriter(Path(spec.out))
    checkpoints = Checkpoints(Path(spec.out) / "checkpoints" / f"{agent_id}.state", writer,
                              node_tables("prosumer", agent_id), replica)
    state = checkpoints.load() if incarnation > 0 or finish else None
    if not finish:
        serve(node, lambda st, inc: prosumer_protocol(spec, agent_id, inc, st, pid=os.getpid()),
              writer, checkpoints, incarnation, state)
        return
    proto = prosumer_protocol(spec, agent_id, incarnation, state, finish, os.getpid())
    apply(proto.start(time.monotonic()), node, writer, checkpoints)
    open_k = proto.pending["k"] if proto.pending is not None else None
    owed = _from_ledger(Path(spec.out), agent_id, open_k) if open_k is not None else None
    apply(proto.finish_from_ledger(owed, time.monotonic()), node, writer, checkpoints)
    checkpoints.close()
    writer.close()
    node.close()


def _from_ledger(out: Path, agent_id: str, k: int) -> SettlementMessage | None:
    """The settlement the market left in its ledger file for an agent down at the end."""
    path = out / "ledger.json"
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get(agent_id, {}).get(str(k))
    return SettlementMessage(**entry) if entry is not None else None
