"""No outbound connection or DNS lookup but the configured Hub downloads: `python app.py` traced with strace.

The app starts on bundled (tiny) packages, as on a Space with no Hub configured, answers one real request, and
keeps running a few seconds more (ONNX Runtime's telemetry looked up mobile.events.data.microsoft.com seconds
after start). Every connect/sendto/sendmsg of the app's process and its threads must go to a unix socket, the
kernel (netlink) or loopback. The app must switch telemetry off itself: the variables are removed from its
environment.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from gradio_client import Client, handle_file

from tests import image_files as files
from tests.conftest import REPO_ROOT
from tests.test_faults_app import app_env
from tests.tiny_packages import make_models_dir

STARTUP_TIMEOUT_S = 180  # app.py under strace on a busy 2-core machine
AFTER_REQUEST_S = 8  # the telemetry lookups came 1-5 s after the first session was created
TELEMETRY_SWITCHES = ("ORT_DISABLE_TELEMETRY", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY", "DO_NOT_TRACK")
# One traced call with its socket address: connect(7, {sa_family=AF_INET, sin_port=htons(53), ...}, 16) = 0
CALL = re.compile(r"\b(connect|sendto|sendmsg)\((\d+), (.*)")
FAMILY = re.compile(r"sa_family=(AF_[A-Z0-9]+)")
IPV4 = re.compile(r'inet_addr\("([0-9.]+)"\)')
IPV6 = re.compile(r'inet_pton\(AF_INET6, "([0-9a-fA-F:.]+)"')


def strace_works() -> str | None:
    """None if strace can trace a child here, else why not (not installed, or ptrace not permitted)."""
    if shutil.which("strace") is None:
        return "strace is not installed (Debian: apt-get install strace; .ci/run installs it)"
    probe = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"strace cannot trace here (ptrace not permitted?): {probe.stderr.strip()[:200]}"
    return None


def destinations(trace: str) -> list[tuple[str, str]]:
    """(family, address) of every traced call that names a destination; calls on connected sockets name none."""
    out = []
    for line in trace.splitlines():
        call = CALL.search(line)
        if not call:
            continue
        family = FAMILY.search(call.group(3))
        if family is None:
            continue  # sendto(fd, ..., NULL, 0) / sendmsg without msg_name: the socket's earlier connect counts
        address = IPV4.search(line) or IPV6.search(line)
        out.append((family.group(1), address.group(1) if address else ""))
    return out


def is_local(family: str, address: str) -> bool:
    if family in ("AF_UNIX", "AF_NETLINK"):
        return True
    if family == "AF_INET":
        return address.startswith("127.")
    if family == "AF_INET6":
        return address in ("::1", "::") or address.startswith("::ffff:127.")
    return False


def stop(strace: subprocess.Popen) -> None:
    """Interrupt the traced app (strace itself would pass SIGTERM on and keep waiting), then let strace finish."""
    for child in psutil.Process(strace.pid).children():
        child.send_signal(signal.SIGINT)
    try:
        strace.wait(timeout=60)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(strace.pid).children():
            child.kill()
        strace.kill()
        strace.wait(timeout=30)


@pytest.mark.slow
def test_app_startup_and_a_request_connect_only_to_loopback(tmp_path):
    reason = strace_works()
    if reason:
        pytest.skip(reason)
    env = app_env(tmp_path, make_models_dir(tmp_path / "bundled"))
    for name in TELEMETRY_SWITCHES:
        env.pop(name, None)
    env.pop("HF_ENDPOINT", None)
    env["HF_HOME"] = str(tmp_path / "hf_home")
    url = f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/"
    trace_file, log = tmp_path / "strace.txt", tmp_path / "app.log"
    command = ["strace", "-f", "-qq", "-s", "64", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace_file),
               sys.executable, "app.py"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"app.py exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"app.py did not start in {STARTUP_TIMEOUT_S} s:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(url + "config", timeout=10):
                    break
            except OSError:
                time.sleep(0.5)
        client = Client(url, verbose=False, ssl_verify=False)
        result = client.submit(handle_file(str(files.jpeg(tmp_path / "photo.jpg", 200, 150))), api_name="/predict")
        answer = result.result(timeout=120)
        time.sleep(AFTER_REQUEST_S)
    finally:
        stop(proc)
    assert sum(answer["lesion_type"].values()) == pytest.approx(1.0, abs=1e-5)  # the request was really served
    traced = destinations(trace_file.read_text())
    assert any(family == "AF_INET" for family, _ in traced), "strace saw no connection at all: nothing was traced"
    outbound = sorted({f"{family} {address}" for family, address in traced if not is_local(family, address)})
    assert outbound == [], f"outbound destinations: {outbound}\n(trace: {trace_file})"


def test_the_trace_parser_tells_loopback_from_outbound():
    """The parser on the lines strace printed for the ONNX Runtime telemetry lookup and for loopback traffic."""
    trace = "\n".join([
        '812 connect(7, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0',
        '812 sendto(7, "\\204\\1\\1\\0\\0\\1\\0\\0\\0\\0\\0\\0\\6mobile\\6events"..., 50, MSG_NOSIGNAL, NULL, 0) = 50',
        '812 connect(9, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
        '813 connect(11, {sa_family=AF_INET, sin_port=htons(7860), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '813 connect(12, {sa_family=AF_INET6, sin6_port=htons(7860), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0',
        '814 sendto(5, {{nlmsg_len=20, nlmsg_type=RTM_GETADDR}}, 20, 0, {sa_family=AF_NETLINK, nl_pid=0}, 12) = 20',
    ])  # fmt: skip
    traced = destinations(trace)
    assert [is_local(*d) for d in traced] == [False, True, True, True, True]
    assert traced[0] == ("AF_INET", "10.255.255.53")
