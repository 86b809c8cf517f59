"""The instrument-PC agent: `allmicro upload` and `allmicro watch` send finished files over tus, resuming after cuts.

It runs on instrument PCs (often Windows, no admin rights) with click and the standard library
alone: no server code, and httpx or tqdm only when a proxy or a progress bar needs them, so that
`import allmicro_data.ingest.agent` stays cheap. One concept per module:

- `tus`: the tus client (create, resume, PATCH with the file's sha256, retries);
- `transport`: the connection to the server (http.client, or httpx behind a proxy; TLS trust);
- `files`: long Windows paths and the sha256 computed while a file is sent;
- `state`: the SQLite memory of what was sent where;
- `watch`: the folder watcher (settle time, scratch names, grouping by folder);
- `progress`: the progress bar;
- `config`: agent.toml and where the state and the log live;
- `cli`: the two commands, which `allmicro_data.cli` loads when they are named.
"""

from __future__ import annotations

from allmicro_data.ingest.agent.cli import upload, watch
from allmicro_data.ingest.agent.errors import AgentError, Refused
from allmicro_data.ingest.agent.transport import Answer, FilePart, Transport, open_transport
from allmicro_data.ingest.agent.tus import Agent, AgentSettings, Outcome
from allmicro_data.ingest.agent.watch import Watcher

__all__ = [
    "Agent",
    "AgentError",
    "AgentSettings",
    "Answer",
    "FilePart",
    "Outcome",
    "Refused",
    "Transport",
    "Watcher",
    "open_transport",
    "upload",
    "watch",
]
