"""Hypothesis strategies for the fuzz run: mutated real frames, nesting and length extremes.

Random bytes alone rarely get past a decoder's first check (a type byte, a length, a CRC), so
most inputs start from a frame the decoder accepts (a published vector or one our simulators
build) and break it the way radios and cables do: flipped bits, inserted, dropped and repeated
bytes, truncation, two frames spliced. JSON entry points also get documents nested at and past
their caps and oversized ones, the inputs that once raised RecursionError and struct.error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# One bound for the whole run: `make fuzz` (and CI) sets FUZZ_EXAMPLES; each target gets that
# many inputs. 2,000 per target keeps the run to a few minutes on two cores.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,  # a failure prints the blob that replays it with @reproduce_failure
)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], max_extra: int = 64) -> bytes:
    """A seed frame with one to four mutations applied."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "repeat", "splice")))
        at = draw(st.integers(0, len(data))) if data else 0
        if op == "flip" and data:
            index = min(at, len(data) - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[min(at, len(data) - 1)] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=max_extra))
        elif op == "delete" and data:
            data[at:at + draw(st.integers(1, 8))] = b""
        elif op == "truncate":
            del data[at:]
        elif op == "repeat" and data:
            chunk = data[at:at + draw(st.integers(1, 16))]
            data[at:at] = chunk * draw(st.integers(1, 8))
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            data[at:] = other[draw(st.integers(0, len(other))):]
    return bytes(data)


def nested_json(depths: Sequence[int]) -> st.SearchStrategy[bytes]:
    """Arrays or objects nested `depth` deep, bare or closed, with a leaf of any JSON type."""

    def build(depth: int, opener: str, closed: bool, leaf: str) -> bytes:
        if opener == "[":
            text = "[" * depth + leaf + ("]" * depth if closed else "")
        else:
            text = '{"a":' * depth + leaf + ("}" * depth if closed else "")
        return text.encode()

    return st.builds(build, st.sampled_from(depths), st.sampled_from("[{"), st.booleans(),
                     st.sampled_from(("1", '"x"', "null", "[]", "{}", "1e400", "-0", "18446744073709551616")))


def around(limit: int) -> list[int]:
    """Lengths at and around a cap, and far past it."""
    return [0, 1, limit - 1, limit, limit + 1, 2 * limit]


def sized(lengths: Sequence[int], fill: Sequence[int] = (0x00, 0x41, 0xFF)) -> st.SearchStrategy[bytes]:
    """Byte strings of exactly the given lengths, uniform or random."""
    uniform = st.builds(lambda n, b: bytes([b]) * n, st.sampled_from(lengths), st.sampled_from(fill))
    random = st.sampled_from([n for n in lengths if n <= 4096]).flatmap(
        lambda n: st.binary(min_size=n, max_size=n))
    return uniform | random


def json_values(max_leaves: int = 20) -> st.SearchStrategy[object]:
    """Any JSON value, with the extremes JSON parsers disagree on."""
    leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
              | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
              | st.sampled_from(["", "\x00", "\ud7ff", "NaN", "Infinity", "-1", "1e309", "0x10"]))
    return st.recursive(leaves, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(st.text(max_size=12), children, max_size=4), max_leaves=max_leaves)
