"""Run a dashboard page over Streamlit's websocket with headers of our choosing, no browser.

A browser decides the headers of its websocket handshake itself; an attacker with a plain
websocket client does not. This client connects to `/_stcore/stream` the way Streamlit's own
front end does (subprotocol "streamlit", an Origin of the same host), sends any headers, asks
for one script run and returns the raw bytes of every message until the run finished, so a
test can look for a sentence or for data that must not be there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

RUN_SECONDS = 60.0


def run_page(url: str, headers: Sequence[tuple[str, str]] = ()) -> str:
    """Everything the server sent for one run of the main page, as text (for `in` checks).

    `headers` are sent as given, one line each, so a header can be sent twice. The sync client
    runs in this thread, beside whatever event loop the test runner keeps.
    """
    stream = url.replace("http://", "ws://", 1).rstrip("/") + "/_stcore/stream"
    received: list[bytes] = []
    deadline = time.monotonic() + RUN_SECONDS
    with connect(
        stream,
        subprotocols=["streamlit"],  # type: ignore[list-item]
        origin=url,  # type: ignore[arg-type]
        additional_headers=list(headers),
        open_timeout=RUN_SECONDS,
    ) as socket:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        rerun.rerun_script.page_script_hash = ""
        socket.send(rerun.SerializeToString())
        while time.monotonic() < deadline:
            frame = socket.recv(timeout=deadline - time.monotonic())
            data = frame if isinstance(frame, bytes) else frame.encode()
            received.append(data)
            if ForwardMsg.FromString(data).WhichOneof("type") == "script_finished":
                break
    return b"".join(received).decode("utf-8", errors="replace")
