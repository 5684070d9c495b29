"""The village node's code path runs on Windows: no POSIX-only calls slip in.

Scans every module under village_node/, shared/ and sync/ (what a village PC runs) for what
works only on POSIX, or silently does less on Windows:

* modules that do not exist on Windows (fcntl, pwd, grp, termios, resource, …);
* ``os`` functions and flags that do not exist there (fork, setsid, statvfs, getuid, chown,
  O_NOFOLLOW, …), and ``signal`` names it lacks (SIGKILL, SIGHUP, SIGUSR1, alarm, …);
* permission bits as protection (``chmod``, ``os.open``/``mkdir`` with a mode, ``umask``):
  Windows only toggles read-only with them;
* ``rename`` (refuses an existing target on Windows; ``replace`` does not);
* symlinks (need a privilege on Windows);
* hard-coded POSIX paths (``/tmp``, ``/var``, ``/etc``…) and ``/`` joined onto a path by hand.

A finding that is justified is allowed below, with the reason; the test fails on any new one,
printing file:line.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("village_node", "shared", "sync")

POSIX_MODULES = {"fcntl", "pwd", "grp", "termios", "tty", "pty", "resource", "posix", "syslog", "crypt",
                 "spwd", "nis", "pipes", "readline"}
POSIX_OS = {"fork", "forkpty", "setsid", "setpgid", "getpgid", "killpg", "getuid", "geteuid", "getgid",
            "getegid", "setuid", "setgid", "seteuid", "setegid", "chown", "lchown", "fchown", "mkfifo", "mknod",
            "statvfs", "fstatvfs", "sync", "uname", "nice", "getloadavg", "openpty", "pipe2", "fchmod", "fchdir",
            "chroot", "wait3", "wait4", "WNOHANG", "O_DIRECTORY", "O_NOFOLLOW", "O_SYNC", "O_DSYNC",
            "posix_fadvise", "posix_fallocate", "sched_getaffinity", "getpwnam", "tzset"}
POSIX_SIGNAL = {"SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGQUIT", "SIGPIPE",
                "SIGSTOP", "SIGCONT", "SIGTSTP", "SIGWINCH", "alarm", "setitimer", "pause", "siginterrupt",
                "pthread_kill"}
POSIX_TIME = {"tzset"}
POSIX_ROOTS = re.compile(r"^/(tmp|var|etc|dev|opt|home|usr|proc|sys|run|srv|mnt)(/|$)")
PATHLIKE_NAME = re.compile(r"(^|_)(dir|path|folder|root|file|directory)$|^(dir|path|folder|root)", re.I)

#: (kind, the source line, stripped) → (how many, why it is fine). Keyed by code, not by file and
#: line, so moving a module keeps its justification.
ALLOWED: dict[tuple[str, str], tuple[int, str]] = {
    ("permission bits", "fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)"): (
        2, "shared/crypto.write_private_file and sync/nodeauth's nonce file: 0600 protects keys and config "
           "on POSIX; on Windows the mode only sets read-only, and the data folder's ACL protects them "
           "(the kit's install.ps1 restricts it to the user, SYSTEM and Administrators with icacls)."),
    ("rename over an existing file", "answer.rename(_workdir() / name)"): (
        1, "shared/web/bundles.py: the target name carries a timestamp and a random tag, so it never exists "
           "(Windows' rename refuses only an existing target)."),
    ('permission bits', 'path.mkdir(parents=True, exist_ok=True, mode=0o700)'): (
        1, "the database, its WAL files, blobs and the data folder: owner-only on POSIX (issue: files and start-up); on Windows the mode is ignored and the data folder's ACL (install.ps1, icacls) protects them"),
    ('permission bits', 'os.chmod(path, 0o600)'): (
        1, "the database, its WAL files, blobs and the data folder: owner-only on POSIX (issue: files and start-up); on Windows the mode is ignored and the data folder's ACL (install.ps1, icacls) protects them"),
    ('permission bits', 'snapshot.chmod(0o600)'): (
        1, "the database, its WAL files, blobs and the data folder: owner-only on POSIX (issue: files and start-up); on Windows the mode is ignored and the data folder's ACL (install.ps1, icacls) protects them"),
    ('permission bits', 'os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))'): (
        1, "the database, its WAL files, blobs and the data folder: owner-only on POSIX (issue: files and start-up); on Windows the mode is ignored and the data folder's ACL (install.ps1, icacls) protects them"),
    ('permission bits', 'os.chmod(path, 0o700)'): (
        1, "the database, its WAL files, blobs and the data folder: owner-only on POSIX (issue: files and start-up); on Windows the mode is ignored and the data folder's ACL (install.ps1, icacls) protects them"),
    ('permission bits', "os.umask(0o077)  # everything the node creates (database, blobs, folders) is the service account's alone"): (
        1, "the database, its WAL files, blobs and the data folder: owner-only on POSIX (issue: files and start-up); on Windows the mode is ignored and the data folder's ACL (install.ps1, icacls) protects them"),
    ('permission bits', 'self._fd = os.open(self.path, _WRITE_FLAGS | os.O_APPEND, 0o600)'): (
        1, "the database, its WAL files, blobs and the data folder: owner-only on POSIX (issue: files and start-up); on Windows the mode is ignored and the data folder's ACL (install.ps1, icacls) protects them"),
    ('permission bits', 'fd = os.open(tmp, _WRITE_FLAGS | os.O_TRUNC, 0o600)'): (
        1, "the database, its WAL files, blobs and the data folder: owner-only on POSIX (issue: files and start-up); on Windows the mode is ignored and the data folder's ACL (install.ps1, icacls) protects them"),
    ("permission bits", 'fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)'): (
        1, "sync/bundle.py: a USB bundle holds cases and scans, owner-only on POSIX; O_BINARY keeps Windows from "
           "translating bytes, where the folder's ACL protects the file"),
    ('POSIX-only name', 'os.fchmod(fd, 0o600)'): (
        1, "sync/blobs.py: called only under os.name == posix (Windows has no fchmod; the folder ACL protects blobs there)"),
    ('POSIX-only name', 'os.fchmod(self._fd, 0o600)'): (
        1, "sync/blobs.py: a file of a batch, called only under os.name == posix (the folder ACL protects blobs on Windows)"),
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_pathlike(node: ast.expr) -> bool:
    """A name, attribute or ``str(...)`` of one that reads as a filesystem path."""
    if isinstance(node, ast.Call) and _dotted(node.func) in ("str", "os.fspath") and node.args:
        return _is_pathlike(node.args[0])
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return bool(name) and bool(PATHLIKE_NAME.search(name))


def _slash(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and "/" in node.value


def findings(source: str) -> list[tuple[int, str, str]]:
    """``(line, kind, detail)`` of every POSIX-only use in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in POSIX_MODULES:
                    found.append((line, "POSIX-only module", module))
            if isinstance(node, ast.ImportFrom) and node.module in ("os", "signal", "time"):
                table = {"os": POSIX_OS, "signal": POSIX_SIGNAL, "time": POSIX_TIME}[node.module]
                found += [(line, "POSIX-only name", f"{node.module}.{a.name}") for a in node.names if a.name in table]
        elif isinstance(node, ast.Attribute):
            owner = _dotted(node.value)
            if (owner == "os" and node.attr in POSIX_OS) or (owner == "signal" and node.attr in POSIX_SIGNAL) or (
                    owner == "time" and node.attr in POSIX_TIME):
                found.append((line, "POSIX-only name", f"{owner}.{node.attr}"))
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            keywords = {k.arg for k in node.keywords}
            if attr in ("chmod", "lchmod", "umask") or func == "os.umask":
                found.append((line, "permission bits", func or attr))
            elif func == "os.open" and (len(node.args) >= 3 or "mode" in keywords):
                found.append((line, "permission bits", func))
            elif attr in ("mkdir", "makedirs", "touch") and "mode" in keywords:
                found.append((line, "permission bits", func or attr))
            elif func in ("os.mkdir", "os.makedirs") and len(node.args) >= 2:
                found.append((line, "permission bits", func))
            elif attr == "rename" or func == "os.rename":
                found.append((line, "rename over an existing file", func or attr))
            elif attr in ("symlink", "symlink_to"):
                found.append((line, "symlink", func or attr))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and POSIX_ROOTS.match(node.value):
            found.append((line, "hard-coded POSIX path", node.value))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and (
                (_is_pathlike(node.left) and _slash(node.right)) or (_slash(node.left) and _is_pathlike(node.right))):
            found.append((line, "'/' joined onto a path", ast.unparse(node)))
        elif isinstance(node, ast.JoinedStr):
            parts = node.values
            for i, part in enumerate(parts):
                if isinstance(part, ast.FormattedValue) and _is_pathlike(part.value):
                    neighbours = parts[i + 1:i + 2] + parts[max(i - 1, 0):i]
                    if any(isinstance(n, ast.Constant) and n.value.startswith("/") or
                           isinstance(n, ast.Constant) and n.value.endswith("/") for n in neighbours):
                        found.append((line, "'/' joined onto a path", ast.unparse(node)))
                        break
    return found


def test_the_scan_recognises_each_kind():
    source = "\n".join([
        "import fcntl", "from os import fork", "import os, signal, time",
        "os.kill(pid, signal.SIGKILL)", "os.setsid()", "os.statvfs(p)", "time.tzset()",
        "os.chmod(p, 0o600)", "path.chmod(0o600)", "os.open(p, os.O_CREAT, 0o600)", "d.mkdir(mode=0o700)",
        "os.rename(a, b)", "tmp.rename(target)", "os.symlink(a, b)",
        "x = '/var/lib/liandong'", "y = data_dir + '/keys'", "z = f'{data_dir}/keys/node.pem'",
        "w = str(blob_path) + '/x'",
        # portable: not findings
        "os.replace(a, b)", "os.open(d, os.O_RDONLY)", "u = '/api/v1/cases'", "v = base_url + '/sync/v1/push'",
        "q = f'{url}/healthz'", "signal.SIGTERM", "Path(p).mkdir(parents=True, exist_ok=True)",
    ])
    kinds = Counter(kind for _, kind, _ in findings(source))
    assert kinds == {"POSIX-only module": 1, "POSIX-only name": 5, "permission bits": 4,
                     "rename over an existing file": 2, "symlink": 1, "hard-coded POSIX path": 1,
                     "'/' joined onto a path": 3}, kinds


def test_the_village_code_path_has_no_new_posix_only_calls():
    seen: Counter = Counter()
    places: dict[tuple[str, str], list[str]] = {}
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            lines = source.splitlines()
            for line, kind, detail in findings(source):
                key = (kind, lines[line - 1].strip())
                seen[key] += 1
                places.setdefault(key, []).append(f"{path.relative_to(ROOT)}:{line} {kind}: {detail}")
    new = [place for key, count in seen.items() if count > ALLOWED.get(key, (0, ""))[0] for place in places[key]]
    assert not new, "POSIX-only code on the village's code path (fix it, or allow it with a reason):\n" + "\n".join(new)
    stale = [key for key in ALLOWED if seen[key] < ALLOWED[key][0]]
    assert not stale, f"allowed findings that are gone (lower their count or drop them): {stale}"
