"""A real nginx reverse proxy in front of a test dashboard, as a sign-in proxy deploys it.

Production sign-in proxies (oauth2-proxy, an identity-aware load balancer) keep the person's
session in a cookie and pass the verified email to the app in a header on every request,
websocket handshake included. This proxy does the same with a test cookie: `proxy_user=<name>`
maps to an email (unknown or missing cookie: no header), and the header is always *set*
(replacing anything the browser sent), never appended, which is how the README tells operators
to configure theirs.

Needs Debian's `nginx` binary (`apt-get install nginx`; `.ci/run` installs it). The proxy runs
as a child process with its own prefix folder, listens on a free loopback port and is stopped
with its server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

NGINX = Path(os.environ.get("NGINX_PATH", shutil.which("nginx") or "/usr/sbin/nginx"))
STARTUP_SECONDS = 15
USER_COOKIE = "proxy_user"

_CONFIG = """
worker_processes 1;
daemon off;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    # The signed-in person, from the session cookie (what oauth2-proxy derives from its own).
    map $cookie_{cookie} $signed_in_email {{
        default "";
{users}
    }}
    # What a misconfigured, appending proxy sends: the browser's value, then its own.
    map $http_{header_var} $appended_email {{
        ""      $signed_in_email;
        default "$http_{header_var}, $signed_in_email";
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            # Set, never appended: whatever the browser sent under this name is replaced, and
            # an empty value (no session) removes the header altogether (append mode aside).
            proxy_set_header {header} {value};
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


@dataclass
class ReverseProxy:
    url: str
    prefix: Path

    def log_tail(self, chars: int = 4_000) -> str:
        parts = []
        for name in ("error.log", "access.log"):
            with suppress(OSError):
                parts.append(f"--- nginx {name}\n{(self.prefix / name).read_text()[-chars:]}")
        return "\n".join(parts)


def nginx_available() -> bool:
    return NGINX.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], proxy: ReverseProxy) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited early:\n{proxy.log_tail()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nginx did not listen in {STARTUP_SECONDS} s:\n{proxy.log_tail()}")


@contextmanager
def sign_in_proxy(
    prefix: Path,
    *,
    upstream: str,
    header: str,
    users: Mapping[str, str],
    append: bool = False,
) -> Iterator[ReverseProxy]:
    """nginx on a free loopback port in front of `upstream`, setting `header` from the cookie.

    `users` maps a `proxy_user` cookie value to the email the proxy puts in `header`. With
    `append`, the proxy is misconfigured the way the README warns about: it keeps the value
    the client sent and adds its own after a comma.
    """
    prefix.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    user_lines = "\n".join(f'        "{name}" "{email}";' for name, email in users.items())
    # As root, nginx's workers would switch to nobody and lose access to the prefix folder.
    config = _CONFIG.format(
        user="user root;" if os.geteuid() == 0 else "",
        prefix=prefix,
        cookie=USER_COOKIE,
        users=user_lines,
        port=port,
        upstream=upstream,
        header=header,
        header_var=header.lower().replace("-", "_"),
        value="$appended_email" if append else "$signed_in_email",
    )
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    proxy = ReverseProxy(url=f"http://127.0.0.1:{port}", prefix=prefix)
    with (prefix / "stderr.log").open("wb") as out:
        process = subprocess.Popen(
            [str(NGINX), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_listening(port, process, proxy)
        yield proxy
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGQUIT)  # graceful: finish open requests
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
