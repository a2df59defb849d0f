"""Operating agate the way systemd, an operator and a load balancer do:
the binary upgrade (USR2, then QUIT to the old one) under load with zero
failed requests, a failed upgrade that leaves the old agate serving,
systemd's readiness protocol (READY, RELOADING, STOPPING on
$NOTIFY_SOCKET), socket activation (LISTEN_FDS), and `user:`.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time

from harness import (AGATE, VALGRIND, Agate, AgateTest, alive, fd_targets,
                     free_port, main, read_proc, wait_until)
from test_signals import Looper


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def children(pid):
    text = read_proc("/proc/%d/task/%d/children" % (pid, pid))
    return [int(p) for p in text.split() if alive(int(p))]


def kill_and_wait(pid, sig=signal.SIGTERM, timeout=30):
    if not alive(pid):
        return
    os.kill(pid, sig)
    try:
        wait_until(lambda: not alive(pid), timeout, what="pid %d to exit"
                   % pid)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)


class UpgradeTest(AgateTest):
    def setUp(self):
        super().setUp()
        # A copy of the binary, so a test can replace it like an install.
        os.makedirs(os.path.join(self.dir, "bin"))
        self.exe = os.path.join(self.dir, "bin", "agate")
        shutil.copy(AGATE, self.exe)
        self.up = self.upstream()
        self.gw = self.agate({"u": {"servers": [self.up.url]}},
                             [{"path": "/", "upstream": "u"}],
                             binary=self.exe, drain_timeout="10s")
        self.pidfile = os.path.join(self.dir, "agate.pid")

    def test_upgrade_under_load_loses_nothing(self):
        old = self.gw.pid
        old_workers = set(self.gw.workers())
        self.assertEqual(read_pid(self.pidfile), old)
        loopers = [Looper(self.gw, "/x") for _ in range(4)]
        for l in loopers:
            l.start()
        time.sleep(0.3)
        self.gw.signal(signal.SIGUSR2)
        new = wait_until(lambda: read_pid(self.pidfile) not in (0, old) and
                         read_pid(self.pidfile), what="the new agate")
        self.addCleanup(kill_and_wait, new)
        self.assertEqual(read_pid(self.pidfile + ".oldbin"), old)
        wait_until(lambda: len(children(new)) == 2, what="its workers")
        time.sleep(0.5)                 # both serve side by side
        self.assertTrue(alive(old))
        self.gw.signal(signal.SIGQUIT)  # finish the switch
        self.assertEqual(self.gw.proc.wait(30), 0)
        self.assertFalse(any(alive(p) for p in old_workers))
        time.sleep(0.5)
        for l in loopers:
            l.finish()
        self.assertEqual([f for l in loopers for f in l.failures], [])
        self.assertGreater(sum(l.ok for l in loopers), 100)
        # The new agate serves alone, answers the CLI, and its pid file
        # is the live one.
        self.assertEqual(self.gw.get("/y").status, 200)
        self.assertFalse(os.path.exists(self.pidfile + ".oldbin"))
        r = subprocess.run([AGATE, "-s", "reload", "-c", self.gw.path],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("took over", self.gw.error_log())

    def test_a_new_binary_that_fails_leaves_the_old_serving(self):
        old = self.gw.pid
        # "Install" a broken binary over the old one's path.
        tmp = self.exe + ".new"
        with open(tmp, "w") as f:
            f.write("#!/bin/sh\necho broken build >&2\nexit 1\n")
        os.chmod(tmp, 0o755)
        os.rename(tmp, self.exe)
        loopers = [Looper(self.gw, "/x") for _ in range(2)]
        for l in loopers:
            l.start()
        self.gw.signal(signal.SIGUSR2)
        wait_until(lambda: "binary upgrade failed" in self.gw.error_log(),
                   what="the upgrade to fail")
        wait_until(lambda: read_pid(self.pidfile) == old,
                   what="the pid file back")
        self.assertFalse(os.path.exists(self.pidfile + ".oldbin"))
        time.sleep(0.3)
        for l in loopers:
            l.finish()
        self.assertEqual([f for l in loopers for f in l.failures], [])
        self.assertEqual(self.gw.get("/z").status, 200)
        self.assertEqual(self.gw.stop(), 0)


class SystemdTest(AgateTest):
    def notify_socket(self):
        path = os.path.join(self.dir, "notify")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.settimeout(15)
        self.addCleanup(s.close)
        return s, path

    def start_with_env(self, env_extra, config_extra=None, cmd=None,
                       **popen):
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u"}], start=False)
        if config_extra:
            gw.config["server"].update(config_extra)
            gw.write_config(gw.config)
        env = dict(os.environ)
        env.update(env_extra)
        gw.err = open(gw.error_path, "a+")
        gw.proc = subprocess.Popen(cmd or [AGATE, "-c", gw.path],
                                   stdout=subprocess.DEVNULL, stderr=gw.err,
                                   cwd=self.dir, env=env, **popen)
        return gw

    def test_readiness_reload_and_stop_are_told(self):
        s, path = self.notify_socket()
        gw = self.start_with_env({"NOTIFY_SOCKET": path})
        msg = s.recv(4096).decode()
        self.assertIn("READY=1", msg)
        self.assertIn("MAINPID=%d" % gw.pid, msg)
        # READY comes only once every worker is up.
        self.assertEqual(gw.get("/").status, 200)
        self.assertEqual(len(gw.workers()), 2)
        gw.signal(signal.SIGHUP)
        msg = s.recv(4096).decode()
        self.assertIn("RELOADING=1", msg)
        self.assertRegex(msg, r"MONOTONIC_USEC=\d+")
        msg = s.recv(4096).decode()
        self.assertIn("READY=1", msg)
        self.assertIn("reloaded", msg)
        # A broken file: RELOADING, then READY again (still serving).
        gw.write_config("server: [")
        gw.signal(signal.SIGHUP)
        self.assertIn("RELOADING=1", s.recv(4096).decode())
        msg = s.recv(4096).decode()
        self.assertIn("READY=1", msg)
        self.assertIn("failed", msg)
        gw.signal(signal.SIGTERM)
        self.assertIn("STOPPING=1", s.recv(4096).decode())
        self.assertEqual(gw.proc.wait(30), 0)

    def test_upgrade_hands_the_main_pid_over_without_stopping(self):
        s, path = self.notify_socket()
        gw = self.start_with_env({"NOTIFY_SOCKET": path})
        old = gw.pid
        self.assertIn("MAINPID=%d" % old, s.recv(4096).decode())
        pidfile = os.path.join(self.dir, "agate.pid")
        gw.signal(signal.SIGUSR2)
        msg = s.recv(4096).decode()
        self.assertIn("READY=1", msg)
        new = int(msg.split("MAINPID=")[1].split()[0])
        self.assertNotEqual(new, old)
        self.addCleanup(kill_and_wait, new)
        wait_until(lambda: read_pid(pidfile) == new, what="the pid file")
        gw.signal(signal.SIGQUIT)       # finish the upgrade
        msg = s.recv(4096).decode()
        self.assertNotIn("STOPPING=1", msg)
        self.assertIn("MAINPID=%d" % new, msg)
        self.assertEqual(gw.proc.wait(30), 0)
        self.assertEqual(gw.get("/").status, 200)
        os.kill(new, signal.SIGTERM)    # now the service stops
        self.assertIn("STOPPING=1", s.recv(4096).decode())
        wait_until(lambda: not alive(new), what="the new agate to stop")

    def test_socket_activation(self):
        port = free_port()
        ls = socket.socket()
        ls.bind(("127.0.0.1", port))
        ls.listen(128)
        fd = ls.fileno()
        inode = os.fstat(fd).st_ino

        def as_fd3():
            os.dup2(fd, 3)
            os.set_inheritable(3, True)
        # LISTEN_PID must name agate itself: a shell sets it, then execs.
        cmd = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', AGATE,
               "-c", os.path.join(self.dir, "agate.yaml")]
        gw = self.start_with_env({"LISTEN_FDS": "1"},
                                 {"listen": ["127.0.0.1:%d" % port]},
                                 cmd=cmd, preexec_fn=as_fd3,
                                 pass_fds=(fd,))
        ls.close()                      # agate holds the only copy now
        gw.wait_ready()
        for _ in range(20):
            self.assertEqual(gw.get("/").status, 200)
        self.assertIn("took over 1 listening socket from systemd",
                      gw.error_log())
        # Both workers accept on the one socket systemd gave.
        for w in gw.workers():
            self.assertIn("socket:[%d]" % inode, fd_targets(w))
        self.assertEqual(gw.stop(), 0)

    def test_socket_activation_with_reuseport_adds_sockets(self):
        # ReusePort=yes: agate joins the passed socket with one of its own
        # per worker; the probe for someone else's listener must not
        # count systemd's socket as someone else.
        port = free_port()
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(128)
        fd = ls.fileno()
        inode = os.fstat(fd).st_ino

        def as_fd3():
            os.dup2(fd, 3)
            os.set_inheritable(3, True)
        cmd = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', AGATE,
               "-c", os.path.join(self.dir, "agate.yaml")]
        gw = self.start_with_env({"LISTEN_FDS": "1"},
                                 {"listen": ["127.0.0.1:%d" % port]},
                                 cmd=cmd, preexec_fn=as_fd3,
                                 pass_fds=(fd,))
        ls.close()
        gw.wait_ready()
        for _ in range(20):
            self.assertEqual(gw.get("/").status, 200)
        log = gw.error_log()
        self.assertIn("took over 1 listening socket from systemd", log)
        self.assertNotIn("address already in use", log)
        # Two sockets, one per worker: systemd's and one agate added.
        held = [t for w in gw.workers() for t in fd_targets(w)
                if t.startswith("socket:")]
        self.assertEqual(sum(t == "socket:[%d]" % inode for t in held), 1)
        self.assertEqual(gw.stop(), 0)


class ExclusiveTest(AgateTest):
    """A second agate on a port or pid file the first uses is refused.

    Listeners use SO_REUSEPORT, which would let a second agate (same user)
    bind the same address and take part of the traffic with its own config.
    """

    def setUp(self):
        super().setUp()
        self.up = self.upstream("first")
        self.gw = self.agate({"u": {"servers": [self.up.url]}},
                             [{"path": "/", "upstream": "u"}])
        self.pidfile = os.path.join(self.dir, "agate.pid")

    def second(self, port=None, **server):
        other = self.upstream("second")
        d = os.path.join(self.dir, "second")
        os.makedirs(d, exist_ok=True)
        cfg = Agate.default_config(port or free_port(),
                                   {"u": {"servers": [other.url]}},
                                   [{"path": "/", "upstream": "u"}], **server)
        gw = Agate(d, cfg)
        self.agates.append(gw)
        gw.start(wait=False)
        try:
            rc = gw.proc.wait(10)
        except subprocess.TimeoutExpired:
            rc = None
        return gw, rc

    def assert_first_serves_alone(self):
        self.assertEqual(read_pid(self.pidfile), self.gw.pid)
        for i in range(40):             # a new connection each
            r = self.gw.get("/n%d" % i)
            self.assertEqual((r.status, r.header("X-Upstream")),
                             (200, "first"))

    def test_second_agate_on_the_same_port_exits_1(self):
        gw2, rc = self.second(self.gw.port)
        self.assertEqual(rc, 1, gw2.error_log())
        self.assertIn("listen 127.0.0.1:%d: address already in use"
                      % self.gw.port, gw2.error_log())
        self.assertNotIn("listening on", gw2.error_log())
        self.assertFalse(os.path.exists(os.path.join(gw2.dir, "agate.pid")))
        self.assert_first_serves_alone()

    def test_second_agate_on_the_same_pid_file_exits_1(self):
        gw2, rc = self.second(pid_file=self.pidfile)
        self.assertEqual(rc, 1, gw2.error_log())
        self.assertIn("pid file %s names pid %d, which is running"
                      % (self.pidfile, self.gw.pid), gw2.error_log())
        self.assertNotIn("listening on", gw2.error_log())
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", gw2.port), 1).close()
        self.assert_first_serves_alone()
        r = subprocess.run([AGATE, "-s", "reload", "-c", self.gw.path],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_until(lambda: "reload done" in self.gw.error_log(),
                   what="the first agate to reload")

    def test_a_stale_pid_file_is_taken_over(self):
        self.gw.stop()
        dead = subprocess.Popen(["true"])
        dead.wait()
        with open(self.pidfile, "w") as f:
            f.write("%d\n" % dead.pid)
        gw = Agate(self.dir, self.gw.config)
        self.agates.append(gw)
        gw.start()
        self.assertEqual(read_pid(self.pidfile), gw.pid)
        self.assertEqual(gw.get("/").status, 200)

    def reload_and_wait(self):
        self.gw.signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in self.gw.error_log() or
                   "reload done" in self.gw.error_log(), what="the reload")
        return self.gw.error_log()

    def test_reload_adding_a_taken_address_fails(self):
        # Someone else listens with SO_REUSEPORT, as an agate would.
        other = socket.socket()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(16)
        self.addCleanup(other.close)
        taken = "127.0.0.1:%d" % other.getsockname()[1]
        self.gw.config["server"]["listen"].append(taken)
        self.gw.write_config(self.gw.config)
        log = self.reload_and_wait()
        self.assertIn("reload failed: listen %s: address already in use"
                      % taken, log)
        self.assertIn("still serving the previous config", log)
        self.assertNotIn("listening on %s" % taken, log)
        other.settimeout(0.5)
        self.assert_first_serves_alone()
        with self.assertRaises(socket.timeout):
            other.accept()

    def test_reload_to_a_pid_file_of_a_running_process_fails(self):
        victim = subprocess.Popen(["sleep", "30"])
        self.addCleanup(victim.wait)
        self.addCleanup(victim.kill)
        theirs = os.path.join(self.dir, "theirs.pid")
        with open(theirs, "w") as f:
            f.write("%d\n" % victim.pid)
        self.gw.config["server"]["pid_file"] = theirs
        self.gw.write_config(self.gw.config)
        log = self.reload_and_wait()
        self.assertIn("reload failed: pid file %s names pid %d, which is "
                      "running" % (theirs, victim.pid), log)
        self.assertEqual(read_pid(theirs), victim.pid)
        self.assert_first_serves_alone()


def title(pid):
    """What ps shows for pid: its command line, NULs as separators."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode()


class ProcTitleTest(AgateTest):
    """Every process says what it is in ps, as nginx's do."""

    def test_titles_of_supervisor_workers_and_helpers(self):
        if VALGRIND:
            self.skipTest("valgrind's own command line is what ps shows")
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u"}])
        self.assertEqual(title(gw.pid), "agate: supervisor %s -c %s"
                         % (AGATE, gw.path))
        self.assertEqual(read_proc("/proc/%d/comm" % gw.pid).strip(),
                         os.path.basename(AGATE)[:15])

        def titled():
            # A child shows its parent's title until it sets its own,
            # just after fork (later still under the sanitizers).
            ws = children(gw.pid)
            return ws and all(
                title(w).startswith("agate: worker ") and children(w) and
                all(title(h).startswith("agate: helper ")
                    for h in children(w)) for w in ws)

        def check(generation):
            workers = sorted(children(gw.pid), key=title)
            self.assertEqual([title(w) for w in workers],
                             ["agate: worker %d (generation %d)"
                              % (i, generation) for i in range(2)])
            for i, w in enumerate(workers):
                self.assertEqual(read_proc("/proc/%d/comm" % w).strip(),
                                 "agate-worker")
                helpers = children(w)
                self.assertEqual([title(h) for h in helpers],
                                 ["agate: helper 0 of worker %d" % i])
                self.assertEqual(read_proc("/proc/%d/comm" % helpers[0])
                                 .strip(), "agate-helper")
        wait_until(titled, what="the helpers, titled")
        check(1)
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "generation 1 has finished" in gw.error_log(),
                   what="the reload")
        wait_until(titled, what="the new helpers, titled")
        check(2)
        # The real command line is kept for a binary upgrade and -s.
        r = subprocess.run([AGATE, "-s", "reopen", "-c", gw.path],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(gw.get("/").status, 200)


class UserTest(AgateTest):
    def test_workers_drop_to_the_configured_user(self):
        if os.getuid() != 0:
            self.skipTest("needs root to change user (not counted as a "
                          "pass)")
        up = self.upstream()
        gw = self.agate({"u": {"servers": [up.url]}},
                        [{"path": "/", "upstream": "u"}], start=False)
        gw.config["server"]["user"] = "nobody"
        gw.write_config(gw.config)
        gw.start()
        nobody = pwd.getpwnam("nobody").pw_uid
        for w in gw.workers():
            uid = int(read_proc("/proc/%d/status" % w).split("Uid:")[1]
                      .split()[0])
            self.assertEqual(uid, nobody)
        sup = int(read_proc("/proc/%d/status" % gw.pid).split("Uid:")[1]
                  .split()[0])
        self.assertEqual(sup, 0)        # it keeps the listeners and files
        self.assertEqual(gw.get("/").status, 200)


if __name__ == "__main__":
    main()
