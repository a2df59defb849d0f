"""The command line: -V, -t, -s, and start-up failures."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import unittest

from harness import AGATE, free_port, main


def run(*args, cwd=None):
    p = subprocess.run([AGATE] + list(args), capture_output=True, text=True,
                       timeout=20, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


class CliTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="agate-cli-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write(self, text, name="agate.yaml"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_version(self):
        rc, out, _ = run("-V")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^agate \d+\.\d+\.\d+\n$")

    def test_check_valid_config(self):
        path = self.write("server:\n  listen: [\"127.0.0.1:1\"]\n")
        rc, _, err = run("-t", "-c", path)
        self.assertEqual(rc, 0, err)
        self.assertIn("valid", err)

    def test_check_invalid_config_names_file_line_column(self):
        path = self.write("server:\n  workers: 2\n  idle_timeout: 10\n")
        rc, _, err = run("-t", "-c", path)
        self.assertEqual(rc, 1)
        self.assertEqual(err.strip(), "agate: %s:3:17: idle_timeout: expected "
                         "a duration like 250ms, 10s or 2m, got '10'" % path)

    def test_long_options(self):
        rc, out, err = run("--version")
        self.assertEqual((rc, err), (0, ""))
        self.assertRegex(out, r"^agate \d+\.\d+\.\d+\n$")
        for opt in ("--help", "-h"):
            rc, out, err = run(opt)
            self.assertEqual((rc, err), (0, ""), opt)
            self.assertTrue(out.startswith("usage: agate "), out)
            self.assertIn("--version", out)
        rc, out, err = run("--nope")
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("usage:", err)

    def test_check_and_signal_together_are_refused(self):
        path = self.write("server:\n  pid_file: agate.pid\n")
        victim = subprocess.Popen(["sleep", "30"])  # must not get the HUP
        self.addCleanup(victim.wait)
        self.addCleanup(victim.kill)
        with open(os.path.join(self.dir, "agate.pid"), "w") as f:
            f.write("%d\n" % victim.pid)
        rc, _, err = run("-t", "-s", "reload", "-c", path)
        self.assertEqual(rc, 1)
        self.assertIn("-t and -s cannot be used together", err)
        self.assertIsNone(victim.poll())

    def test_check_missing_file(self):
        missing = os.path.join(self.dir, "nope.yaml")
        for args in (["-t"], [], ["-s", "reload"]):
            rc, _, err = run(*args, "-c", missing)
            self.assertEqual(rc, 1, args)
            self.assertEqual(err, "agate: %s: No such file or directory\n"
                             % missing, args)

    def start(self, path):
        """Runs agate as a service would; a start that hangs on is a
        failure to refuse."""
        p = subprocess.Popen([AGATE, "-c", path], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=self.dir)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            return None, err
        return p.returncode, err

    def test_check_and_start_look_at_the_machine(self):
        # Like nginx -t: what start-up needs from the machine is checked,
        # and start-up refuses the same with the same line (not exit 2 of
        # the workers, nor a warning and on).
        missing = os.path.join(self.dir, "missing")
        head = "server:\n  workers: 1\n  listen: [\"127.0.0.1:%d\"]\n" % \
            free_port()
        cases = [
            ("  user: nosuchuser-agate\n",
             "4:9: user: no such user 'nosuchuser-agate'"),
            ("  pid_file: missing/agate.pid\n",
             "4:13: pid_file: cannot write %s/agate.pid: folder %s does not "
             "exist" % (missing, missing)),
            ("  pid_file: agate.yaml/agate.pid\n",
             "4:13: pid_file: cannot write %s/agate.yaml/agate.pid: folder "
             "%s/agate.yaml is not a folder" % (self.dir, self.dir)),
            ("log:\n  access: missing/access.log\n",
             "5:11: log.access: cannot create %s/access.log: folder %s does "
             "not exist" % (missing, missing)),
            ("log:\n  error: missing/error.log\n",
             "5:10: log.error: cannot create %s/error.log: folder %s does "
             "not exist" % (missing, missing)),
            ("log:\n  access: %s\n" % self.dir,
             "5:11: log.access: %s is a folder" % self.dir),
        ]
        for extra, reason in cases:
            path = self.write(head + extra)
            want = "agate: %s:%s\n" % (path, reason)
            rc, _, err = run("-t", "-c", path)
            self.assertEqual((rc, err), (1, want), extra)
            rc, err = self.start(path)
            self.assertEqual(rc, 1, (extra, err))
            self.assertEqual(err, want)
        self.assertFalse(os.path.exists(missing))

    def test_check_creates_no_log_file(self):
        logs = os.path.join(self.dir, "logs")
        os.mkdir(logs)
        old = os.path.join(logs, "error.log")
        with open(old, "w") as f:
            f.write("old line\n")
        before = os.stat(old)
        path = self.write("server:\n  pid_file: logs/agate.pid\nlog:\n"
                          "  access: logs/access.log\n  error: logs/error.log"
                          "\n")
        rc, _, err = run("-t", "-c", path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(os.listdir(logs), ["error.log"])
        after = os.stat(old)
        self.assertEqual((after.st_size, after.st_mtime_ns),
                         (before.st_size, before.st_mtime_ns))

    def test_bundled_service_files_agree(self):
        # The unit, its config and logrotate must name one pid file, in a
        # folder the unit makes and ProtectSystem=full leaves writable.
        etc = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "..", "..", "etc")
        def read(name):
            with open(os.path.join(etc, name)) as f:
                return f.read()
        pid = re.search(r"^  pid_file: (\S+)", read("agate.yaml"),
                        re.M).group(1)
        self.assertTrue(pid.startswith("/run/"), pid)
        unit = read("agate.service")
        self.assertIn("\nProtectSystem=full\n", unit)
        folder = os.path.dirname(pid)[len("/run/"):]
        self.assertIn("\nRuntimeDirectory=%s\n" % folder, unit)
        self.assertIn("-c /etc/agate/agate.yaml", unit)
        rotate = read(os.path.join("logrotate.d", "agate"))
        self.assertEqual(set(re.findall(r"/run/\S*\.pid", rotate)), {pid})
        # The bundled config is valid once that folder exists.
        d = os.path.join(self.dir, "etc")
        shutil.copytree(etc, d)
        os.makedirs(os.path.join(self.dir, folder))
        text = read("agate.yaml").replace(pid, os.path.join(self.dir,
                                          folder, os.path.basename(pid)))
        path = self.write(text, os.path.join("etc", "agate.yaml"))
        rc, _, err = run("-t", "-c", path)
        self.assertEqual(rc, 0, err)

    def test_signal_without_a_running_agate(self):
        path = self.write("server:\n  pid_file: agate.pid\n")
        rc, _, err = run("-s", "reload", "-c", path)
        self.assertEqual(rc, 1)
        self.assertIn("cannot open pid file", err)

    def test_signal_without_a_pid_file_setting(self):
        path = self.write("server:\n  workers: 1\n")
        rc, _, err = run("-s", "stop", "-c", path)
        self.assertEqual(rc, 1)
        self.assertIn("no server.pid_file", err)

    def test_unknown_command_and_option(self):
        path = self.write("server:\n  pid_file: agate.pid\n")
        rc, _, err = run("-s", "restart", "-c", path)
        self.assertEqual(rc, 1)
        self.assertIn("unknown command 'restart'", err)
        rc, _, err = run("-x")
        self.assertEqual(rc, 1)
        self.assertIn("usage:", err)

    def test_start_fails_cleanly_when_the_port_is_taken(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        path = self.write("server:\n  workers: 1\n  listen: [\"127.0.0.1:%d\"]"
                          "\n" % port)
        rc, _, err = run("-c", path)
        s.close()
        self.assertEqual(rc, 1)
        self.assertIn("listen 127.0.0.1:%d: address already in use" % port,
                      err)
        self.assertNotIn("listening on", err)

    def test_start_refuses_a_port_another_process_shares(self):
        # SO_REUSEPORT on both sides would let agate bind and split the
        # connections with this socket's owner.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        port = s.getsockname()[1]
        path = self.write("server:\n  workers: 1\n  listen: [\"127.0.0.1:%d\"]"
                          "\n" % port)
        p = subprocess.Popen([AGATE, "-c", path], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("listen 127.0.0.1:%d: address already in use by "
                      "another process" % port, err)
        self.assertNotIn("listening on 127", err)

    def test_start_failure_reaches_stderr_with_an_error_log_file(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        port = s.getsockname()[1]
        path = self.write("server:\n  workers: 1\n  listen: [\"127.0.0.1:%d\"]"
                          "\nlog:\n  error: error.log\n" % port)
        rc, err = self.start(path)
        self.assertEqual(rc, 1, err)
        reason = "listen 127.0.0.1:%d: address already in use by another " \
            "process" % port
        self.assertEqual(err, "agate: %s\n" % reason)
        with open(os.path.join(self.dir, "error.log")) as f:
            self.assertIn("supervisor: " + reason, f.read())


if __name__ == "__main__":
    main()
