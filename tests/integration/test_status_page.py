"""The admin status page (`/` on the admin listener) in a real browser:
headless Chromium driven by chromedriver over the W3C WebDriver protocol
(a few HTTP calls, no Selenium needed).

The page loads with no error, shows every route and upstream of the
config, and its numbers change after traffic without the page being
reloaded (it refreshes itself from /status).

Needs Debian's chromium and chromium-driver (autogen.sh installs them).
"""

import json
import os
import shutil
import subprocess
import time
import urllib.request

from harness import AgateTest, free_port, main, wait_until

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class WebDriver:
    """Just enough of the W3C WebDriver protocol."""

    def __init__(self, workdir):
        self.port = free_port()
        self.log = open(os.path.join(workdir, "chromedriver.log"), "w")
        self.proc = subprocess.Popen([CHROMEDRIVER, "--port=%d" % self.port],
                                     stdout=self.log, stderr=self.log)
        self.base = "http://127.0.0.1:%d" % self.port
        wait_until(self._up, timeout=20, what="chromedriver")
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox",
                         "--disable-gpu", "--disable-dev-shm-usage",
                         "--user-data-dir=" + os.path.join(workdir,
                                                           "chrome")]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def _up(self):
        try:
            return self.call("GET", "/status")["ready"]
        except OSError:
            return False

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data,
                                     method=method, headers={
                                         "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.session, path),
                         body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def script(self, js):
        return self.s("POST", "/execute/sync", {"script": js, "args": []})

    def quit(self):
        try:
            self.s("DELETE", "")
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class StatusPageTest(AgateTest):
    def test_page_shows_routes_upstreams_and_live_numbers(self):
        users = self.upstream("users")
        orders = self.upstream("orders")
        admin = free_port()
        gw = self.agate(
            upstreams={"users": {"servers": [users.url]},
                       "orders": {"servers": [orders.url]}},
            routes=[{"path": "/api/users/", "upstream": "users"},
                    {"path": "/api/orders/", "upstream": "orders"}],
            start=False)
        gw.config["admin"] = {"listen": "127.0.0.1:%d" % admin}
        gw.write_config(gw.config)
        gw.start()
        wd = WebDriver(self.dir)
        self.addCleanup(wd.quit)
        wd.go("http://127.0.0.1:%d/" % admin)
        self.assertEqual(wd.script("return document.title"), "agate status")
        wait_until(lambda: "workers" in (wd.script(
            "return document.getElementById('summary').textContent") or ""),
            timeout=10, what="the page's first refresh")
        text = wd.script("return document.body.innerText")
        for name in ("/api/users/", "/api/orders/", "users", "orders",
                     users.url, orders.url):
            self.assertIn(name, text)
        self.assertEqual(wd.script(
            "return document.getElementById('err').textContent"), "")

        def users_requests():
            return wd.script(
                "const r=[...document.querySelectorAll('#routes tr')]"
                ".find(t=>t.cells[0].textContent==='/api/users/');"
                "return r?Number(r.cells[2].textContent):-1;")
        self.assertEqual(users_requests(), 0)
        for _ in range(7):
            self.assertEqual(gw.get("/api/users/1").status, 200)
        # No reload: the page fetches /status by itself.
        wait_until(lambda: users_requests() == 7, timeout=10,
                   what="the page to show 7 requests")
        workers = wd.script("return document.querySelectorAll("
                            "'#workers tr').length")
        self.assertEqual(workers, 1 + 2)        # header + 2 workers
        # Each worker's loop health, from /status: a number in each cell.
        cells = wd.script(
            "const t=document.getElementById('workers');"
            "const h=[...t.rows[0].cells].map(c=>c.textContent);"
            "return [...t.rows].slice(1).map(r=>['in flight','lag p99 ms',"
            "'slow callbacks'].map(k=>r.cells[h.indexOf(k)].textContent));")
        self.assertEqual(len(cells), 2)
        for in_flight, p99, slow in cells:
            self.assertEqual((in_flight, slow), ("0", "0"))
            self.assertGreaterEqual(float(p99), 1)


if __name__ == "__main__":
    main()
