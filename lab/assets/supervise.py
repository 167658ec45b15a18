#!/usr/bin/python3
"""The lab's stand-in for systemd, for one service inside a node root.

Runs as root in the node's network namespace and chroot (started by the lab
with `ip netns exec NS chroot ROOT python3 supervise.py SPEC`). From the
resolved unit (SPEC, JSON written by lab/services.ts) it does what systemd
does for the rendered units: StateDirectory/RuntimeDirectory/LogsDirectory,
ExecStartPre, ExecStart as User/Group with the unit's environment only,
LimitNOFILE, Type=notify readiness through NOTIFY_SOCKET, Type=oneshot with
RemainAfterExit=, Restart= with
RestartSec=, and on SIGTERM a stop honouring KillMode= and TimeoutStopSec=.
It is a child subreaper, so daemons that detach (Patroni's postmaster) stay
its descendants, as they would stay in the unit's cgroup.

State goes to STATUS (JSON, rewritten on every change): state, mainPid,
starts, ready, lastExit.
"""
import ctypes
import grp
import json
import os
import pwd
import resource
import select
import signal
import socket
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}


def log(message):
    sys.stderr.write("%s [lab-supervisor %s] %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), SPEC["unit"], message))
    sys.stderr.flush()


SPEC = json.load(open(sys.argv[1], encoding="utf-8"))
STATUS_PATH = sys.argv[2]
status = {"unit": SPEC["unit"], "state": "starting", "mainPid": None, "starts": 0, "ready": False, "lastExit": None, "supervisorPid": os.getpid()}


def write_status(**changes):
    status.update(changes)
    temporary = STATUS_PATH + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(status, handle)
    os.replace(temporary, STATUS_PATH)


def account():
    user = pwd.getpwnam(SPEC["user"])
    gid = grp.getgrnam(SPEC["group"]).gr_gid if SPEC.get("group") else user.pw_gid
    groups = os.getgrouplist(user.pw_name, gid)
    return user, gid, groups


def make_dirs(entries, uid, gid):
    for entry in entries:
        path = entry["path"]
        os.makedirs(path, exist_ok=True)
        for root, dirs, files in os.walk(path):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                st = os.lstat(name)
                if st.st_uid != uid or st.st_gid != gid:
                    os.lchown(name, uid, gid)
        os.chmod(path, entry["mode"])


def child_env(user):
    env = dict(SPEC["env"])
    if SPEC["user"] != "root" or "HOME" not in env:
        env.setdefault("HOME", user.pw_dir)
        env.setdefault("USER", user.pw_name)
        env.setdefault("LOGNAME", user.pw_name)
        env.setdefault("SHELL", user.pw_shell)
    return env


def preexec(uid, gid, groups, privileged):
    def run():
        os.umask(0o022)
        if SPEC.get("limitNofile"):
            limit = int(SPEC["limitNofile"])
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            except (ValueError, OSError):
                # This machine caps the hard limit (fs.nr_open or the sandbox): keep what is allowed.
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
        os.setsid()
        if not privileged and uid != 0:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
    return run


def spawn(command, extra_env=None):
    user, gid, groups = account()
    env = child_env(user)
    if extra_env:
        env.update(extra_env)
    cwd = SPEC.get("workingDirectory") or "/"
    return subprocess.Popen(command["argv"], env=env, cwd=cwd, preexec_fn=preexec(user.pw_uid, gid, groups, command["privileged"]), close_fds=True)


def descendants(root_pid):
    """Every live process whose ancestry leads to root_pid (this supervisor)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found = set()
    frontier = [root_pid]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return found


def reap():
    """Reaps every exited child; returns {pid: wait status}."""
    exited = {}
    while True:
        try:
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        if pid == 0:
            return exited
        exited[pid] = wstatus


def kill_all(sig):
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


stop_requested = False


def on_stop(signum, frame):
    global stop_requested
    stop_requested = True


def should_restart(wstatus):
    policy = SPEC["restart"]
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        clean = sig in CLEAN_SIGNALS
        abnormal = not clean
    else:
        clean = os.WEXITSTATUS(wstatus) == 0
        abnormal = False
    return {
        "always": True,
        "on-success": clean,
        "on-failure": not clean,
        "on-abnormal": abnormal,
        "on-abort": os.WIFSIGNALED(wstatus) and not clean,
        "on-watchdog": False,
        "no": False,
    }.get(policy, False)


def describe(wstatus):
    if os.WIFSIGNALED(wstatus):
        return "signal %d" % os.WTERMSIG(wstatus)
    return "exit %d" % os.WEXITSTATUS(wstatus)


def run_blocking(command):
    try:
        process = spawn(command)
    except (OSError, subprocess.SubprocessError) as error:
        log("cannot run %s: %s" % (" ".join(command["argv"]), error))
        return command["ignoreFailure"]
    while True:
        exited = reap()
        if process.pid in exited:
            process.returncode = exited[process.pid]
            wstatus = exited[process.pid]
            ok = os.WIFEXITED(wstatus) and os.WEXITSTATUS(wstatus) == 0
            if not ok and not command["ignoreFailure"]:
                log("%s failed: %s" % (" ".join(command["argv"]), describe(wstatus)))
                return False
            return True
        time.sleep(0.05)


def stop_main(main):
    """SIGTERM per KillMode, SIGKILL after TimeoutStopSec."""
    mode = SPEC["killMode"]
    if mode in ("control-group",):
        kill_all(signal.SIGTERM)
    elif mode in ("process", "mixed"):
        try:
            os.kill(main.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + SPEC["timeoutStopSec"]
    while time.monotonic() < deadline:
        exited = reap()
        if main.pid in exited:
            write_status(lastExit=describe(exited[main.pid]))
            break
        time.sleep(0.05)
    else:
        log("stop timed out; SIGKILL")
        try:
            os.kill(main.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if mode in ("control-group", "mixed"):
        kill_all(signal.SIGKILL)


def run_oneshot():
    """Type=oneshot: ExecStartPre= and ExecStart= to completion; "exited" and
    ready once they succeed (RemainAfterExit=yes keeps it so until stopped,
    as systemd's "active (exited)"), "failed" otherwise."""
    user, gid, _ = account()
    make_dirs(SPEC["stateDirectories"] + SPEC["logsDirectories"], user.pw_uid, gid)
    make_dirs(SPEC["runtimeDirectories"], user.pw_uid, gid)
    ok = all(run_blocking(command) for command in SPEC["execStartPre"] + [SPEC["execStart"]])
    write_status(state="exited" if ok else "failed", starts=status["starts"] + 1, ready=ok, lastExit="exit 0" if ok else "failed")
    log("finished: %s" % ("ok" if ok else "failed"))
    if ok and SPEC.get("remainAfterExit"):
        while not stop_requested:
            time.sleep(0.2)
        write_status(state="stopped", ready=False)
        log("stopped")
    return 0


def main():
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if SPEC["type"] == "oneshot":
        return run_oneshot()
    runtime = "/run/pgha-lab"
    notify_path = os.path.join(runtime, "notify-%s.sock" % SPEC["unit"])
    notify = None
    if SPEC["type"] == "notify":
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        os.chmod(notify_path, 0o666)
    while True:
        user, gid, _ = account()
        make_dirs(SPEC["stateDirectories"] + SPEC["logsDirectories"], user.pw_uid, gid)
        make_dirs(SPEC["runtimeDirectories"], user.pw_uid, gid)
        ok = True
        for command in SPEC["execStartPre"]:
            if stop_requested or not run_blocking(command):
                ok = False
                break
        main_process = None
        wstatus = None
        if ok and not stop_requested:
            try:
                main_process = spawn(SPEC["execStart"], {"NOTIFY_SOCKET": notify_path} if notify else None)
            except (OSError, subprocess.SubprocessError) as error:
                log("cannot start %s: %s" % (" ".join(SPEC["execStart"]["argv"]), error))
                ok = False
        if ok and main_process is not None and not stop_requested:
            write_status(state="running", mainPid=main_process.pid, starts=status["starts"] + 1, ready=SPEC["type"] != "notify")
            log("started %s as pid %d" % (" ".join(SPEC["execStart"]["argv"]), main_process.pid))
            while True:
                if notify is not None:
                    readable, _, _ = select.select([notify], [], [], 0.1)
                    if readable:
                        message = notify.recv(4096).decode("utf-8", "replace")
                        if "READY=1" in message.split("\n") and not status["ready"]:
                            write_status(ready=True)
                            log("ready (sd_notify)")
                else:
                    time.sleep(0.1)
                exited = reap()
                if main_process.pid in exited:
                    wstatus = exited[main_process.pid]
                    main_process.returncode = wstatus
                    break
                if stop_requested:
                    stop_main(main_process)
                    break
        if stop_requested:
            for entry in SPEC["runtimeDirectories"]:
                subprocess.call(["rm", "-rf", entry["path"]])
            write_status(state="stopped", mainPid=None, ready=False)
            log("stopped")
            # KillMode=process leaves the rest running (as systemd does); wait for them.
            while descendants(os.getpid()):
                reap()
                time.sleep(0.2)
            return 0
        if wstatus is not None:
            log("main process exited: %s" % describe(wstatus))
            write_status(lastExit=describe(wstatus))
        restart = wstatus is None or should_restart(wstatus)
        if SPEC["killMode"] in ("control-group", "mixed"):
            kill_all(signal.SIGKILL)
        if not restart:
            write_status(state="failed" if wstatus is None or describe(wstatus) != "exit 0" else "exited", mainPid=None, ready=False)
            while descendants(os.getpid()) and not stop_requested:
                reap()
                time.sleep(0.2)
            return 0
        write_status(state="auto-restart", mainPid=None, ready=False)
        deadline = time.monotonic() + SPEC["restartSec"]
        while time.monotonic() < deadline and not stop_requested:
            reap()
            time.sleep(0.05)
        if stop_requested:
            write_status(state="stopped")
            return 0


if __name__ == "__main__":
    sys.exit(main())
