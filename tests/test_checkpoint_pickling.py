"""How clients and their buffered messages are pickled into a checkpoint.

A checkpoint holds one agent per client and every buffered message. Pickled with the default slots
state, each of them leaves a dict in the pickler's memo until the dump ends, which is what made a
checkpoint's transient memory about three times its size. They are pickled as constructor
arguments instead; these tests check that nothing is lost on the way and that no per-message dict
is memoised.
"""

from __future__ import annotations

import io
import pickle

from recnet.world.agents import ClientAgent
from recnet.world.buffer import MessageBuffer, RouterMessage
from recnet.world.rules import FilterMemory


def agent_with_messages(n: int) -> ClientAgent:
    shared = {"genre:drama": 0.8, "era:1990s": 0.2}  # one multicast's snapshot, shared
    buffer = MessageBuffer(n + 1, "drop_newest")
    for k in range(n):
        buffer.push(RouterMessage(k, "r:1", "u:7", 3, 0.25 * k, shared, f"text {k}"))
    return ClientAgent(
        agent_id="u:7",
        kind="user",
        key="7",
        label="user 7",
        original={"genre:comedy": 1.0},
        buffer=buffer,
        filters=FilterMemory(rules=(), max_rules=4, owner="u:7"),
        propagated={"genre:drama": 0.5},
        text="likes comedy",
        propagated_text="hears drama",
        interactions=12,
    )


def test_a_client_and_its_buffer_come_back_whole() -> None:
    agent = agent_with_messages(5)
    again = pickle.loads(pickle.dumps(agent, protocol=pickle.HIGHEST_PROTOCOL))
    for name in ClientAgent.__dataclass_fields__:
        if name != "buffer":  # a buffer compares by identity: its content below
            assert getattr(again, name) == getattr(agent, name), name
    assert (again.buffer.capacity, again.buffer.overflow) == (6, "drop_newest")
    assert again.buffer.drain() == agent.buffer.drain()
    messages = pickle.loads(pickle.dumps(agent_with_messages(3).buffer.drain()))
    assert messages[0].attributes is messages[2].attributes  # shared snapshots stay shared


def test_no_dict_is_memoised_per_message() -> None:
    agent = agent_with_messages(40)
    pickler = pickle.Pickler(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dump(agent)
    memoised = [obj for _, obj in pickler.memo.copy().values()]
    dicts = [obj for obj in memoised if type(obj) is dict]
    # the two profiles, the shared snapshot and the filter rule's params: not one per message
    assert len(dicts) <= 4
    # the buffer is pickled by field: no message object is memoised either
    assert not any(type(obj) is RouterMessage for obj in memoised)
