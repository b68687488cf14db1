"""The request guard from outside, with raw HTTP as an attacker would send it: file objects that name anything but
this request's upload, oversized and chunked bodies, refused uploads left on disk, and per-visitor memory."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skin_demo.guard import BAD_EVENT_DATA, REFUSED_FILE, UNKNOWN_EVENT
from skin_demo.imaging import MAX_FILE_BYTES
from skin_demo.settings import Settings
from skin_demo.ui import JSON_BODY_LIMIT, MULTIPART_OVERHEAD
from skin_demo.uploads import sweep_leftovers
from tests import image_files as files
from tests.conftest import REPO_ROOT
from tests.served_app import free_port, serve
from tests.tiny_packages import make_models_dir

META = {"_type": "gradio.FileData"}
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("guarded")) as app:
        yield app, httpx.Client(base_url=app.url, timeout=TIMEOUT_S)


def upload(http: httpx.Client, path: Path, name: str | None = None) -> str:
    response = http.post("/gradio_api/upload", files={"files": (name or path.name, path.read_bytes(), "image/jpeg")})
    response.raise_for_status()
    return response.json()[0]


def refusal(response: httpx.Response) -> str:
    """The guard's reason: `detail`, or for a refused input the message of Gradio's validation form, which
    gradio_client turns into a ValidationError that carries it."""
    detail = response.json()["detail"]
    if response.status_code == 422:
        (item,) = detail
        assert (item["__type__"], item["is_valid"]) == ("validate", False)
        return item["message"]
    return detail


def call_predict(http: httpx.Client, payload) -> tuple[int, str]:
    """POST /gradio_api/call/predict and, if accepted, read the event's outcome: (HTTP status, text)."""
    response = http.post("/gradio_api/call/predict", json={"data": [payload]})
    if response.status_code != 200:
        return response.status_code, refusal(response)
    outcome = http.get(f"/gradio_api/call/predict/{response.json()['event_id']}").text
    return 200, outcome


def refused_payloads(site: str, temp_dir: Path, example: str) -> dict[str, object]:
    png = base64.b64encode(files.save(files.lesion_photo(64, 64), temp_dir.parent / "p.png").read_bytes()).decode()
    return {
        "server-path-without-meta": {"path": example},
        "server-path": {"path": example, "meta": META},
        "etc-shadow": {"path": "/etc/shadow", "meta": META},
        "missing-path": {"path": "/nonexistent/photo.jpg", "meta": META},
        "directory": {"path": "/tmp", "meta": META},
        "escape-from-the-upload-folder": {"path": f"{temp_dir}/abc/../../../etc/passwd", "meta": META},
        "url": {"path": f"{site}/photo.jpg", "meta": META},
        "url-of-an-unknown-host": {"path": "http://example.invalid/photo.jpg", "meta": META},
        "data-url": {"url": f"data:image/png;base64,{png}", "meta": META},
        "data-url-as-path": {"path": f"data:image/png;base64,{png}", "meta": META},
        "plain-string": example,
        "number": 7,
        "nested": {"path": {"path": example, "meta": META}, "meta": META},
    }


def test_event_inputs_that_are_not_an_upload_are_refused_with_one_message(served, local_site, tmp_path, capfd):
    app, http = served
    site, hits = local_site
    example = str(files.jpeg(tmp_path / "on_the_server.jpg"))  # a real image on the server's disk
    for name, payload in refused_payloads(site, app.temp_dir, example).items():
        status, text = call_predict(http, payload)
        assert (status, text) == (422, REFUSED_FILE), name
    assert hits == [], "the server fetched a URL a client named"
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err and "base64" not in log.out + log.err
    assert app.files_left() == [], "a refused request left a file behind (a decoded data URL, a download)"


def test_the_page_events_refuse_what_predict_refuses(served, tmp_path):
    """No hidden event takes a server path: the page's upload event through Gradio's queue, as a browser calls it."""
    app, http = served
    config = http.get("/config").json()
    elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    events = [d for d in config["dependencies"] if d["inputs"] and d["targets"]]  # the API has no trigger
    assert events, "the page has events with inputs"
    for event in events:
        trigger = event["targets"][0][0]
        body = {"data": [{"path": "/etc/passwd", "meta": META}], "fn_index": event["id"], "trigger_id": trigger,
                "session_hash": uuid.uuid4().hex, "event_data": None}  # fmt: skip
        response = http.post("/gradio_api/queue/join", json=body)
        assert (response.status_code, refusal(response)) == (422, REFUSED_FILE), elem.get(trigger)


def test_a_client_cannot_end_another_session(served):
    """The page's unload event deletes its session's photos; only the server triggers it, never a client."""
    app, http = served
    config = http.get("/config").json()
    (unload,) = [d for d in config["dependencies"] if any(t[1] == "unload" for t in d["targets"])]
    body = {"data": [], "fn_index": unload["id"], "session_hash": "someone-else", "event_data": None}
    for route in ("queue/join", "run/predict"):
        response = http.post(f"/gradio_api/{route}", json=body)
        assert (response.status_code, response.json()["detail"]) == (400, UNKNOWN_EVENT), route


def test_another_visitors_upload_cannot_be_analysed_or_deleted_by_someone_else(served, tmp_path):
    app, http = served
    photo = files.jpeg(tmp_path / "mine.jpg", 300, 200, seed=4)
    path = upload(http, photo)
    status, text = call_predict(http, {"path": path, "meta": META})
    assert status == 200 and "event: complete" in text and "malignancy_flag" in text
    # Another visitor who learnt the path (say, from a shared log) gets the same refusal as for any server path:
    other = httpx.Client(base_url=app.url, timeout=TIMEOUT_S)
    status, text = call_predict(other, {"path": path, "meta": META})
    assert status == 200 and "event: error" in text and json.dumps(REFUSED_FILE)[1:-1] in text
    assert not Path(path).exists() and path not in app.uploads.paths()


# JSON values as a client could send them, with the strings an attacker would try among the random ones.
SUSPECT_STRINGS = st.sampled_from(["/etc/passwd", "/tmp", "..", "http://example.invalid/x.png", "data:image/png;base64,AA",
                                   "file:///etc/passwd", "gradio.FileData", ""])  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | SUSPECT_STRINGS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["path", "url", "meta", "_type", "data", "orig_name", "x"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=JSON_VALUES | st.fixed_dictionaries({"data": st.lists(JSON_VALUES, max_size=3)}),
    route=st.sampled_from(["call/predict", "run/predict", "call/v2/predict", "queue/join"]),
)
def test_random_json_to_predict_never_gives_a_500_a_traceback_or_a_path(served, capfd, body, route):
    app, http = served
    response = http.post(f"/gradio_api/{route}", json=body)
    assert response.status_code < 500, response.text
    text = response.text
    if response.status_code == 200 and route == "call/predict":
        text = http.get(f"/gradio_api/call/predict/{response.json()['event_id']}").text
        assert "event: complete" not in text, text  # nothing random is an upload
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err
    assert str(app.temp_dir) not in text and "No such file" not in text and "directory" not in text.lower()


def test_one_client_cannot_consume_another_clients_upload_of_the_same_photo(served, tmp_path):
    """Issue 20, item 6: Gradio stores an upload under the hash of its bytes and name, so B, holding the same photo,
    got A's path by uploading it too, analysed it, and so deleted it: A's own call then got "no image was uploaded".
    Now each upload gets a path of its own (a random folder), unknown to anyone but its uploader."""
    app, http = served
    photo = files.jpeg(tmp_path / "shared.jpg", 200, 150, seed=9)
    a_path = upload(http, photo)
    b = httpx.Client(base_url=app.url, timeout=TIMEOUT_S)
    b_path = upload(b, photo)
    assert b_path != a_path and Path(a_path).name == Path(b_path).name == "shared.jpg"
    assert "event: complete" in call_predict(b, {"path": b_path, "meta": META})[1]
    assert Path(a_path).is_file(), "B's analysis deleted A's upload"
    assert "event: complete" in call_predict(http, {"path": a_path, "meta": META})[1]
    # Gradio's content-addressed path is gone and never was an upload of this app.
    gradio_path = str(app.temp_dir / Path(a_path).parent.name)
    assert not any(p.startswith(gradio_path) for p in app.uploads.paths())
    assert not Path(a_path).exists() and not Path(b_path).exists()


def test_page_uploads_belong_to_the_session_that_analysed_them(served, tmp_path):
    """A page photo stays for its preview after its analysis, but only for its own session: another session that
    learns its path gets the "no longer on the server" message, and it goes when its session ends."""
    app, http = served
    path = upload(http, files.jpeg(tmp_path / "page.jpg", 120, 90, seed=3))
    assert app.uploads.claim(path, "session-a") and app.uploads.claim(path, "session-a")
    assert not app.uploads.claim(path, "session-b") and not app.uploads.take(path, "session-b")
    assert Path(path).is_file()
    assert app.uploads.end_session("session-a") == 1
    assert not Path(path).exists() and not Path(path).parent.exists()


def queue_outcome(http: httpx.Client, body: dict) -> tuple[int, str]:
    """POST /gradio_api/queue/join as the page does and, if accepted, read the event's messages to its end."""
    response = http.post("/gradio_api/queue/join", json=body)
    if response.status_code != 200:
        return response.status_code, response.json()["detail"]
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": body["session_hash"]}) as stream:
        text = "".join(line for line in stream.iter_lines() if "process_completed" in line)
    return 200, text


def test_malformed_selections_of_the_hidden_gallery_event_log_nothing(tmp_path_factory, capfd):
    """Issue 20, item 5: a select event call naming example 999 (or with event_data null, without a value, with a
    string index or a server path as value) logged a 1.8 kB traceback per request, 50 requests in 1.6 s. Each is
    now refused (400) or answered with a message, and nothing reaches the log."""
    root = tmp_path_factory.mktemp("with_examples")
    examples = root / "examples"
    examples.mkdir()
    files.jpeg(examples / "ex1.jpg", 64, 48)
    (examples / "manifest.csv").write_text("file,dx,label,source,licence\nex1.jpg,mel,Melanoma (mel),generated,CC0\n")
    settings = Settings(models_dir=make_models_dir(root / "models"), examples_dir=examples, threads=1)
    with serve(root, settings=settings) as app:
        http = httpx.Client(base_url=app.url, timeout=TIMEOUT_S)
        config = http.get("/config").json()
        elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
        (select,) = [d for d in config["dependencies"] if any(elem.get(t[0]) == "examples" for t in d["targets"])]
        variants = {
            "out-of-range": {"index": 999, "value": None},
            "null": None,
            "no-value": {"index": 999},
            "string-index": {"index": "0", "value": None},
            "negative": {"index": -1, "value": None},
            "path-as-value": {"index": 999, "value": {"path": "/etc/passwd", "meta": META}},
        }
        capfd.readouterr()
        outcomes = {}
        for round_ in range(3):
            for name, event_data in variants.items():
                body = {"data": [], "fn_index": select["id"], "trigger_id": select["targets"][0][0],
                        "session_hash": uuid.uuid4().hex, "event_data": event_data}  # fmt: skip
                outcomes[name] = queue_outcome(http, body)
        log = capfd.readouterr()
    assert outcomes["null"] == outcomes["string-index"] == outcomes["negative"] == (400, BAD_EVENT_DATA)
    for name in ("out-of-range", "no-value", "path-as-value"):
        status, text = outcomes[name]
        assert status == 200 and "this example is not on the page" in text, (name, text[:300])
    assert "Traceback" not in log.out + log.err and "/etc/passwd" not in log.out + log.err


def test_json_bodies_are_capped_before_they_are_read(served):
    app, http = served
    too_big = json.dumps({"data": [{"url": "data:image/png;base64," + "A" * JSON_BODY_LIMIT, "meta": META}]})
    response = http.post("/gradio_api/call/predict", content=too_big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than 0.07 MB" in response.json()["detail"]

    def chunks():  # no Content-Length: the guard counts as it reads
        for _ in range(40):
            yield b"A" * 4096

    response = http.post("/gradio_api/queue/join", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def raw_request(url: str, head: str, body: bytes = b"") -> bytes:
    """Send `head` + `body` on a plain socket and return the first bytes of the answer."""
    host, port = url.split("//")[1].strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as s:
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        return s.recv(4096)


def test_an_upload_declaring_more_than_the_limit_is_refused_before_its_body(served):
    app, _ = served
    limit = MAX_FILE_BYTES + MULTIPART_OVERHEAD
    head = (f"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {limit + 1}")  # fmt: skip
    answer = raw_request(app.url, head)  # no body sent at all: the answer cannot have waited for it
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_chunked_upload_past_the_limit_is_cut_off_and_leaves_nothing(served):
    app, http = served
    start = time.time() - 1

    def body():  # a well-formed multipart upload that never ends
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="endless.jpg"\r\n' \
              b"Content-Type: image/jpeg\r\n\r\n"
        for _ in range((MAX_FILE_BYTES + MULTIPART_OVERHEAD) // 2**20 + 4):
            yield b"\xff" * 2**20

    headers = {"content-type": "multipart/form-data; boundary=b"}
    response = http.post("/gradio_api/upload", content=body(), headers=headers)
    assert response.status_code == 413
    tracked = app.uploads.paths()
    sweep_leftovers(app.temp_dir, tracked, older_than_s=-1, since=start)
    assert [p for p in app.files_left() if str(p) not in tracked] == []


def test_a_refused_upload_name_is_swept_but_tracked_uploads_stay(served, tmp_path):
    app, http = served
    start = time.time() - 1
    response = http.post("/gradio_api/upload", files={"files": ("..", b"not a photo", "image/jpeg")})
    assert response.status_code == 400
    kept = upload(http, files.jpeg(tmp_path / "pending.jpg", 100, 80))  # uploaded, not analysed yet
    untracked = [p for p in app.files_left() if str(p) not in app.uploads.paths()]
    assert untracked, "Gradio leaves the refused upload's temp file untracked"
    assert sweep_leftovers(app.temp_dir, app.uploads.paths(), older_than_s=-1, since=start) >= 1
    assert [p for p in app.files_left() if str(p) not in app.uploads.paths()] == []
    assert Path(kept).is_file()  # its own timer deletes it a minute after upload


def app_process(tmp_path: Path) -> tuple[subprocess.Popen, str, Path, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKIN_DEMO_", "GRADIO_"))}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(tmp_path / "gtmp"),
               SKIN_DEMO_MODELS_DIR=str(make_models_dir(tmp_path / "models")), SKIN_DEMO_THREADS="1",
               SKIN_DEMO_EXAMPLES_DIR=str(tmp_path / "none"), PYTHONUNBUFFERED="1")  # fmt: skip
    log = tmp_path / "app.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        try:
            if httpx.get(url + "/config", timeout=5).status_code == 200:
                return proc, url, tmp_path / "gtmp", log
        except httpx.HTTPError:
            time.sleep(0.5)


@pytest.mark.slow
def test_sigterm_deletes_every_upload_like_ctrl_c(tmp_path):
    """A Space is stopped with SIGTERM: pending uploads and refused uploads' temp files must not survive it."""
    proc, url, temp_dir, log = app_process(tmp_path)
    try:
        http = httpx.Client(base_url=url, timeout=TIMEOUT_S)
        pending = upload(http, files.jpeg(tmp_path / "pending.jpg"))
        assert http.post("/gradio_api/upload", files={"files": ("..", b"x", "image/jpeg")}).status_code == 400
        assert Path(pending).is_file() and len([p for p in temp_dir.rglob("*") if p.is_file()]) >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()
    assert [p for p in temp_dir.rglob("*") if p.is_file()] == [], log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_memory_does_not_grow_with_fresh_sessions(tmp_path):
    """2,000 requests, each from a new session (as many visitors would send): the server's RSS grows <= 50 MB.

    Prints the figure. SKIN_DEMO_SESSIONS sets the number of requests (default 2000)."""
    sessions = int(os.environ.get("SKIN_DEMO_SESSIONS", "2000"))
    proc, url, _, log = app_process(tmp_path)
    try:
        http = httpx.Client(base_url=url, timeout=TIMEOUT_S)
        photo = files.jpeg(tmp_path / "photo.jpg", 120, 90)
        server = psutil.Process(proc.pid)
        rss = []
        for i in range(sessions):
            status, text = call_predict(http, {"path": upload(http, photo, name=f"p{i}.jpg"), "meta": META})
            assert status == 200 and "event: complete" in text, text[:300]
            if i in (99, sessions - 1):  # after warm-up, and at the end
                rss.append(server.memory_info().rss)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    growth_mb = (rss[-1] - rss[0]) / 2**20
    print(f"\nRSS after 100 requests {rss[0] / 2**20:.0f} MB, after {sessions}: {rss[-1] / 2**20:.0f} MB "
          f"(+{growth_mb:.1f} MB for {sessions - 100} fresh sessions)")  # fmt: skip
    assert growth_mb <= 50
