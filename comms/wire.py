"""The wire format: a versioned header and a typed body, packed with msgpack.

A message is the msgpack array ``[version, scenario, episode, round, sender, kind,
body]``; ``body`` is a map whose fields are checked against ``KINDS``. Numbers travel
as msgpack floats and ints, arrays as ``{"dtype", "shape", "data"}`` with raw
little-endian bytes (float32/float64/int64 only). msgpack never executes anything
while decoding (no pickle on the wire). ``decode`` raises ``WireError`` with a reason
for anything that is not a well-formed message of this scenario: nodes log the reason,
count it and keep serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_DTYPES = {"<f4": np.float32, "<f8": np.float64, "<i8": np.int64}

# field -> type: int, float, str, bool, array, floats (map str->float), map (str->any)
KINDS: dict[str, dict[str, str]] = {
    "round_start": {"k": "int", "deadline_s": "float", "sent_at": "float"},
    "bid": {"bus": "str", "bid_kwh": "float", "surplus_kwh": "float", "q_kvar": "float",
            "volt_var_kva": "float", "q_max_kvar": "float"},
    "settlement": {
        "p2p_bought_kwh": "float", "p2p_sold_kwh": "float", "grid_import_kwh": "float",
        "grid_export_kwh": "float", "buy_price_per_kwh": "float", "sell_price_per_kwh": "float",
        "sdr": "float", "payment": "float", "grid_only_payment": "float",
        "retail_price": "float", "feed_in_price": "float", "traded": "bool",
        "tsp_kwh": "float", "tbp_kwh": "float", "net_import_kwh": "float",
    },
    "positions": {"k": "int", "surplus_kwh": "floats", "q_kvar": "floats",
                  "volt_var_kva": "floats", "q_max_kvar": "floats", "bus": "map"},
    "grid_signal": {"vm_pu": "floats", "converged": "bool", "voltage_penalty": "floats",
                    "line_penalty": "floats", "volt_var_q_kvar": "floats",
                    "max_line_loading_pct": "float"},
    "round_done": {"k": "int"},
    "resend": {"k": "int", "surplus_kwh": "float", "attempt": "int"},
    "critic": {"update": "int", "step": "int", "params": "array"},
    "hello": {"pid": "int"},
    "stop": {},
    "crash": {"k": "int"},
}


class WireError(ValueError):
    """A message that cannot be accepted, with the reason."""


@dataclass(frozen=True)
class Header:
    scenario: str
    episode: int
    round: int
    sender: str
    kind: str
    version: int = WIRE_VERSION

    @property
    def key(self) -> tuple[str, int, int, str]:
        """What identifies a message for duplicate detection."""
        return (self.kind, self.episode, self.round, self.sender)


def _pack_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        dtype = a.dtype.newbyteorder("<").str
        if dtype not in _DTYPES:
            raise WireError(f"array dtype {a.dtype} is not sent on the wire")
        return {"dtype": dtype, "shape": list(a.shape), "data": a.astype(dtype).tobytes()}
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, dict):
        return {k: _pack_value(x) for k, x in v.items()}
    return v


def encode(header: Header, body: dict[str, Any]) -> bytes:
    check_body(header.kind, body)
    return msgpack.packb(
        [header.version, header.scenario, header.episode, header.round, header.sender,
         header.kind, {k: _pack_value(v) for k, v in body.items()}],
        use_bin_type=True,
    )


def _unpack_array(field: str, v: Any) -> np.ndarray:
    if not isinstance(v, dict) or set(v) != {"dtype", "shape", "data"}:
        raise WireError(f"{field}: not an array")
    dtype = _DTYPES.get(v["dtype"]) if isinstance(v["dtype"], str) else None
    shape = v["shape"]
    if dtype is None:
        raise WireError(f"{field}: dtype {v['dtype']!r} not accepted")
    if (not isinstance(shape, list) or len(shape) > 4
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape)):
        raise WireError(f"{field}: bad shape {shape!r}")
    if not isinstance(v["data"], bytes):
        raise WireError(f"{field}: data is not bytes")
    n = math.prod(shape)
    if len(v["data"]) != n * np.dtype(dtype).itemsize:
        raise WireError(f"{field}: {len(v['data'])} bytes do not fill shape {shape}")
    out = np.frombuffer(v["data"], dtype=dtype).reshape(shape).copy()
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise WireError(f"{field}: non-finite values")
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_body(kind: str, body: Any) -> dict[str, Any]:
    """The body with arrays unpacked, or ``WireError`` naming the field and the problem."""
    spec = KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise WireError(f"unknown kind {kind!r}")
    if not isinstance(body, dict):
        raise WireError(f"{kind}: body is not a map")
    if set(body) != set(spec):
        missing, extra = sorted(set(spec) - set(body)), sorted(set(body) - set(spec), key=str)
        raise WireError(f"{kind}: fields missing {missing}, unexpected {extra}")
    out: dict[str, Any] = {}
    for field, typ in spec.items():
        v = body[field]
        where = f"{kind}.{field}"
        if typ == "int" and not (isinstance(v, int) and not isinstance(v, bool)):
            raise WireError(f"{where} = {v!r}: not an integer")
        if typ == "float" and not _is_number(v):
            raise WireError(f"{where} = {v!r}: not a number")
        if typ == "str" and not isinstance(v, str):
            raise WireError(f"{where} = {v!r}: not a string")
        if typ == "bool" and not isinstance(v, bool):
            raise WireError(f"{where} = {v!r}: not a boolean")
        if typ == "floats" and not (isinstance(v, dict) and all(
                isinstance(k, str) and _is_number(x) for k, x in v.items())):
            raise WireError(f"{where}: not a map of names to numbers")
        if typ == "map" and not (isinstance(v, dict) and all(isinstance(k, str) for k in v)):
            raise WireError(f"{where}: not a map with string keys")
        if typ == "array":
            v = _unpack_array(where, v) if not isinstance(v, np.ndarray) else v
        out[field] = float(v) if typ == "float" else v
    return out


def decode(data: bytes, scenario: str | None = None) -> tuple[Header, dict[str, Any]]:
    """Header and checked body of ``data``; ``WireError`` for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"{len(data)} bytes: larger than {MAX_MESSAGE_BYTES}")
    try:
        msg = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as err:  # msgpack raises several types for malformed input
        raise WireError(f"not msgpack: {type(err).__name__}") from None
    if not isinstance(msg, list) or len(msg) != 7:
        raise WireError("not a 7-element message array")
    version, scen, episode, rnd, sender, kind, body = msg
    if version != WIRE_VERSION:
        raise WireError(f"wire version {version!r}, expected {WIRE_VERSION}")
    if not isinstance(scen, str) or (scenario is not None and scen != scenario):
        raise WireError(f"foreign scenario {scen!r}")
    for name, v in (("episode", episode), ("round", rnd)):
        if not isinstance(v, int) or isinstance(v, bool) or v < -1:
            raise WireError(f"header.{name} = {v!r}: not a round number")
    if not isinstance(sender, str) or not sender:
        raise WireError(f"header.sender = {sender!r}: not a name")
    return Header(scen, episode, rnd, sender, kind), check_body(kind, body)
