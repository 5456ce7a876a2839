"""A headless Chromium driven through its DevTools protocol (websocket-client only): open a page,
run script in it, collect console errors and uncaught exceptions, take a screenshot.

The browser is the system's (Debian's ``chromium``); nothing is downloaded. Network is off: the
browser gets no proxy-free route (``--proxy-server`` to a closed port) and the page's requests
are recorded, so a test can assert that an offline page asked for nothing.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """``with Browser() as b: b.open(path); b.eval("1 + 1"); b.screenshot(png)``."""

    def __init__(self, executable: str | None = None, timeout_s: float = 15.0):
        import websocket  # websocket-client (dev extra)

        self.executable = executable or find_chromium()
        if self.executable is None:
            raise RuntimeError("no Chromium on this machine")
        self.timeout_s = timeout_s
        self.profile = tempfile.mkdtemp(prefix="chexbench-chromium-")
        self.proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        browser_ws = self._devtools_url()
        port = browser_ws.split(":")[2].split("/")[0]
        page_ws = self._page_target(port)
        self.ws = websocket.create_connection(page_ws, timeout=timeout_s, suppress_origin=True)
        self._id = 0
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            self.send(method)

    def _devtools_url(self) -> str:
        deadline = time.monotonic() + self.timeout_s
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "DevTools listening on" in line:
                return line.split("DevTools listening on", 1)[1].strip()
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"{self.executable} did not start a DevTools endpoint")

    def _page_target(self, port: str) -> str:
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise RuntimeError("Chromium has no page target")

    def _record(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.console_errors.append(
                d.get("exception", {}).get("description") or d.get("text", "exception")
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.console_errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._record(msg)

    def wait_for_event(self, method: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self._record(msg)
            if msg.get("method") == method:
                return
        raise TimeoutError(method)

    def open(self, path: Path) -> None:
        self.send("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for_event("Page.loadEventFired")

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def key(self, key: str, code: str, key_code: int) -> None:
        """A real key press on the focused element (Enter, Space …)."""
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=key_code,
                **(
                    {"text": "\r" if key == "Enter" else key}
                    if kind == "keyDown" and key in ("Enter", " ")
                    else {}
                ),
            )

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
