"""State files (checkpoints, policies) load without running code; old pickles are refused."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from peergrid.agents import statefile
from peergrid.agents.learners.config import LearnerConfig
from peergrid.agents.learners.policyfile import load_policy, save_policy
from peergrid.agents.learners.ppo import PPOLearner
from peergrid.agents.spaces import ACTION_DIM, OBS_DIM
from peergrid.comms.nodes.loop import Checkpoints
from peergrid.comms.protocol.ledger import MarketLedger
from peergrid.comms.runlog import RunWriter
from peergrid.market.sdr import Tariff


class _Evil:
    """What an attacker writes: unpickling calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_bytes(marker: Path) -> bytes:
    return pickle.dumps({"state": _Evil(marker), "offsets": {}})


def test_a_state_round_trips_arrays_dataclasses_and_plain_state_classes():
    ledger = MarketLedger(["a01", "a02"])
    ledger.rounds[3] = (Tariff(0.3, 0.04), 0.7)
    state = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "ledger": ledger,
             "s": {1, 2}, "t": (1.5, "a"), "rng": np.random.default_rng(3).bit_generator.state}
    back = statefile.loads(statefile.dumps(state))
    np.testing.assert_array_equal(back["x"], state["x"])
    assert back["x"].dtype == np.float32
    assert back["ledger"].rounds == {3: (Tariff(0.3, 0.04), 0.7)}
    assert back["s"] == {1, 2} and back["t"] == (1.5, "a") and back["rng"] == state["rng"]


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    data = statefile.MAGIC + _evil_bytes(marker)
    with pytest.raises(statefile.StateFileError, match="posix.system|os.system"):
        statefile.loads(data, "evil.state")
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("peergrid.comms.launcher", "launch"),
                                    ("torch.serialization", "load"), ("subprocess", "Popen")])
def test_globals_outside_the_allowlist_are_refused(target):
    module, name = target
    data = statefile.MAGIC + f"c{module}\n{name}\n.".encode()  # a protocol-0 GLOBAL
    with pytest.raises(statefile.StateFileError, match=f"{module}.{name}"):
        statefile.loads(data, "x.state")


def test_old_checkpoints_and_torch_files_are_refused_with_a_clear_error(tmp_path):
    old = tmp_path / "best.pt"
    torch.save({"team": {"w": torch.zeros(2)}}, old)
    with pytest.raises(statefile.StateFileError, match=r"best.pt: not a peergrid state file "
                                                       r"\(a pickle"):
        statefile.load(old)
    with pytest.raises(statefile.StateFileError, match="not a peergrid state file"):
        statefile.loads(pickle.dumps({"a": 1}), "ckpt")
    with pytest.raises(statefile.StateFileError, match="missing.state"):
        statefile.load(tmp_path / "missing.state")


def test_a_node_checkpoint_written_by_an_attacker_is_refused(tmp_path):
    """Checkpoints.read takes the file's CRC as intact; the content is still refused."""
    marker = tmp_path / "pwned"
    for body in (_evil_bytes(marker), statefile.MAGIC + _evil_bytes(marker)):
        path = tmp_path / "checkpoints" / "a01.state"
        path.parent.mkdir(exist_ok=True)
        header = struct.pack("<QQI", 1, len(body), zlib.crc32(body))
        Path(f"{path}.0").write_bytes(header + body)
        with pytest.raises(statefile.StateFileError):
            Checkpoints(path, RunWriter(tmp_path), []).load()
    assert not marker.exists()


def test_a_policy_file_rebuilds_the_learner_exactly(tmp_path):
    learner = PPOLearner("a01", OBS_DIM, ACTION_DIM, LearnerConfig(), seed=5,
                         reward_scale=2.0, mode="networked", public_dim=7, estimator_dim=9,
                         shared_seed=11)
    obs = np.linspace(-1, 1, OBS_DIM).astype(np.float32)
    learner.act(obs)  # moves its random stream
    save_policy(tmp_path / "a01.state", learner)
    back = load_policy(tmp_path / "a01.state")
    assert isinstance(back, PPOLearner) and back.init == learner.init
    np.testing.assert_array_equal(back.act(obs, greedy=True), learner.act(obs, greedy=True))
    np.testing.assert_array_equal(back.act(obs), learner.act(obs))  # same stream
    np.testing.assert_array_equal(back.consensus_parameters(), learner.consensus_parameters())


def test_a_state_file_cannot_make_a_module_be_imported_or_reach_attributes(tmp_path):
    import sys

    assert "peergrid.comms.preload" not in sys.modules  # importing it warms torch up
    data = statefile.MAGIC + b"cpeergrid.comms.preload\nNope\n."
    with pytest.raises(statefile.StateFileError, match="preload.Nope"):
        statefile.loads(data, "x.state")
    assert "peergrid.comms.preload" not in sys.modules
    name = b"dtypes.Float64DType"
    dotted = (statefile.MAGIC + b"\x80\x04\x8c\x05numpy\x94\x8c" + bytes([len(name)]) + name
              + b"\x94\x93.")  # STACK_GLOBAL with a dotted name
    with pytest.raises(statefile.StateFileError, match="refers to numpy.dtypes.Float64DType"):
        statefile.loads(dotted, "x.state")


def test_a_run_of_an_older_peergrid_is_refused_by_name(tmp_path):
    from peergrid.scenarios.commands.train import read_state

    torch.save({"team": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(statefile.StateFileError, match="checkpoint.pt: a run of an older"):
        read_state(tmp_path / "checkpoint.state")
