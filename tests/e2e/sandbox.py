"""Run a command under the seccomp sandbox of a systemd unit, the way systemd installs it.

``systemd-analyze verify`` checks a unit's syntax, not whether the service survives its
sandbox, and CI machines have no running systemd to start the unit in. The parts of the
sandbox that can break a Python service at run time are seccomp filters, which need no
privileges, so this module rebuilds them from the unit file and applies them with libseccomp
(through ctypes, as systemd 252 does with the C library) before exec'ing the command:

- ``SystemCallFilter=`` (allow list with removals, groups expanded by ``systemd-analyze
  syscall-filter``) with ``SystemCallErrorNumber=`` for everything else;
- ``SystemCallArchitectures=native`` (libseccomp's default: calls of other ABIs are killed);
- ``RestrictAddressFamilies=`` (``socket()`` of another family fails with EAFNOSUPPORT);
- ``MemoryDenyWriteExecute=yes`` (systemd's rules: ``mmap`` with write+exec, ``mprotect`` and
  ``pkey_mprotect`` adding exec, ``shmat`` with ``SHM_EXEC`` fail with EPERM);
- ``NoNewPrivileges=yes``.

Mount and namespace options (``ProtectSystem=``, ``PrivateTmp=``, ...) need privileges and are
not applied here. The filters are inherited by every child, so job processes and the
forkserver run under them too.

Usage: ``python -m tests.e2e.sandbox POLICY.json COMMAND [ARG...]`` (see :func:`unit_policy`).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE = 0x2
PROT_EXEC = 0x4
SHM_EXEC = 0o100000
PR_SET_NO_NEW_PRIVS = 38
#: Address family numbers checked one by one; anything above is refused by a single rule.
AF_LIMIT = 64


def scmp_act_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


def unit_directives(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in file order (keys may repeat)."""
    directives: dict[str, list[str]] = {}
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def syscall_groups() -> dict[str, list[str]]:
    """systemd's syscall groups (``@name`` -> members, which may be groups themselves)."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                          text=True, check=True, timeout=30).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def _expand(names: Sequence[str], groups: dict[str, list[str]]) -> set[str]:
    result: set[str] = set()
    for name in names:
        result |= _expand(groups[name], groups) if name.startswith("@") else {name}
    return result


def unit_policy(unit: Path) -> dict[str, Any]:
    """The seccomp policy the unit asks for, as JSON-able data for :func:`apply_policy`.

    Raises:
        ValueError: The unit uses a form this emulation does not implement (a deny-list
            ``SystemCallFilter=``, another architecture list).
    """
    directives = unit_directives(unit)
    filters = directives.get("SystemCallFilter", [])
    if not filters or filters[0].startswith("~"):
        raise ValueError("expected SystemCallFilter= to start with an allow list")
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in filters:
        names = value.lstrip("~").split()
        if value.startswith("~"):
            allowed -= _expand(names, groups)
        else:
            allowed |= _expand(names, groups)
    if directives.get("SystemCallArchitectures") not in (None, ["native"]):
        raise ValueError("only SystemCallArchitectures=native is emulated")
    error_name = directives.get("SystemCallErrorNumber", ["EPERM"])[-1]
    families = directives.get("RestrictAddressFamilies", [""])[-1].split()
    return {
        "allow": sorted(allowed),
        "errno": getattr(errno, error_name),
        "address_families": sorted(getattr(socket, name) for name in families),
        "memory_deny_write_execute": directives.get("MemoryDenyWriteExecute") == ["yes"],
        "no_new_privileges": directives.get("NoNewPrivileges") == ["yes"],
    }


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Seccomp:
    """The few libseccomp calls needed; each filter is one context, loaded on its own."""

    def __init__(self) -> None:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def resolve(self, name: str) -> int | None:
        number = int(self.lib.seccomp_syscall_resolve_name(name.encode()))
        return number if number >= 0 else None  # unknown, or absent on this architecture

    def load(self, default_action: int,
             rules: Sequence[tuple[int, str, Sequence[tuple[int, int, int, int]]]]) -> None:
        """Load one filter: ``rules`` are (action, syscall, [(arg, op, a, b), ...])."""
        ctx = self.lib.seccomp_init(default_action)
        if not ctx:
            raise OSError("seccomp_init failed")
        try:
            for action, name, comparisons in rules:
                number = self.resolve(name)
                if number is None:
                    continue
                array = (_ArgCmp * max(1, len(comparisons)))(
                    *(_ArgCmp(*comparison) for comparison in comparisons))
                code = self.lib.seccomp_rule_add_array(ctx, action, number, len(comparisons),
                                                       array)
                if code < 0:
                    raise OSError(-code, f"seccomp rule for {name}: {os.strerror(-code)}")
            code = self.lib.seccomp_load(ctx)
            if code < 0:
                raise OSError(-code, f"seccomp_load: {os.strerror(-code)}")
        finally:
            self.lib.seccomp_release(ctx)


def apply_policy(policy: dict[str, Any]) -> None:
    """Install the policy on this process (and so on everything it execs or forks)."""
    seccomp = _Seccomp()
    if policy["no_new_privileges"]:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    families = set(policy["address_families"])
    if families:
        refuse = scmp_act_errno(errno.EAFNOSUPPORT)
        rules = [(refuse, "socket", [(0, SCMP_CMP_EQ, family, 0)])
                 for family in range(AF_LIMIT) if family not in families]
        rules.append((refuse, "socket", [(0, SCMP_CMP_GT, AF_LIMIT - 1, 0)]))
        seccomp.load(SCMP_ACT_ALLOW, rules)
    if policy["memory_deny_write_execute"]:
        eperm = scmp_act_errno(errno.EPERM)
        write_exec = PROT_WRITE | PROT_EXEC
        seccomp.load(SCMP_ACT_ALLOW, [
            (eperm, "mmap", [(2, SCMP_CMP_MASKED_EQ, write_exec, write_exec)]),
            (eperm, "mprotect", [(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC)]),
            (eperm, "pkey_mprotect", [(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC)]),
            (eperm, "shmat", [(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC)]),
        ])
    # Last: the allow list may not include what loading another filter needs.
    seccomp.load(scmp_act_errno(policy["errno"]),
                 [(SCMP_ACT_ALLOW, name, []) for name in policy["allow"]])


def main(argv: Sequence[str]) -> None:
    """``POLICY.json COMMAND [ARG...]``: apply the policy, then exec the command."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m tests.e2e.sandbox POLICY.json COMMAND [ARG...]")
    apply_policy(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    os.execvp(argv[1], list(argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
