"""The executor's building blocks, for runtimes that embed its node code (EdgePlane).

Theory of operation
-------------------
LaneGraph SP and MP run a spec as *nodes* visited in *rounds*: a round visits every node once,
in flow order, and each visit moves at most a batch without ever waiting. A runtime that owns
its processes and lanes (EdgePlane forks its own stage workers over lanes whose records carry
stamps) drives the very same node code, so error policies, merges, explicit release and the
counters rows behave exactly as under ``byteor run``:

* :class:`Input` reads one or several input lanes as one stream in the node's merge order,
  and gives back what it took only at a commit;
* :class:`Outbox` holds a step's records until its output lane has room;
* :class:`StageNode` steps one stage's op between an :class:`Input` and its outboxes,
  applying the stage's error policy, and publishes its counters to a :class:`NodeRow` (a
  :class:`byteor.lanes.RowWriter`, or a runtime's wrapper of one) at each commit;
* :class:`Node` is what a round visits (``run``, ``blocked``, ``done``);
* :func:`run_round` visits every node once; :func:`drive` runs rounds until every node is
  done, calling back with an :class:`IdleBackoff` timeout when a round moved nothing;
* :func:`set_pdeathsig` makes a forked worker die with its parent (Linux).

The executors own their sources and sinks; a runtime brings its own edges and uses these for
its stages. Names here are the public API; the modules that define them are private.
"""

from __future__ import annotations

from byteor.exec._mp import IdleBackoff, drive, set_pdeathsig
from byteor.exec._sp import Input, Node, NodeRow, Outbox, StageNode, run_round

__all__ = [
    "Node",
    "StageNode",
    "Input",
    "Outbox",
    "NodeRow",
    "run_round",
    "drive",
    "IdleBackoff",
    "set_pdeathsig",
]
