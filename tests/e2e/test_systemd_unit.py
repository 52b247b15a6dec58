"""The systemd unit and its install snippets, checked by systemd's own tools and a real daemon.

``systemd-analyze verify`` and ``security --offline`` need no running systemd. The unit is
verified as installed, with only ExecStart pointed at this checkout's ``heavy-optimizer``
(verify requires the binary to exist). The sysusers/tmpfiles snippets are applied to a
temporary root by ``systemd-sysusers``/``systemd-tmpfiles``. Finally a real daemon runs a
real optimisation under the unit's seccomp sandbox (tests/e2e/sandbox.py), which is what
``MemoryDenyWriteExecute=`` or ``SystemCallFilter=`` would break at run time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import JobProcessorConfig
from tests.daemon_harness import make_config_dir, record, running_daemon, wait_for
from tests.e2e.sandbox import unit_directives, unit_policy
from tests.paths import REPO_ROOT, SAMPLES_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SYSTEMD_DIR = REPO_ROOT / "systemd"
UNIT = SYSTEMD_DIR / "heavy-optimizer.service"
#: The exposure `systemd-analyze security` reports for the unit (README.md); a change that
#: weakens the sandbox beyond it must be deliberate.
MAX_EXPOSURE = 1.1
VENV_COMMAND = Path(sys.executable).parent / "heavy-optimizer"


def _systemd_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the systemd package (.ci/run does)",
                    pytrace=False)
    return path


def _installable_copy(folder: Path, command: Path = VENV_COMMAND) -> Path:
    """The unit with ExecStart pointed at ``command`` (this checkout's console script)."""
    text = UNIT.read_text(encoding="utf-8")
    text, count = re.subn(r"^ExecStart=\S+", f"ExecStart={command}", text, flags=re.M)
    assert count == 1
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / UNIT.name
    copy.write_text(text, encoding="utf-8")
    return copy


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_systemd_tool("systemd-analyze"), *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # Given verify really checks the unit (a missing ExecStart binary is an error)
    missing = tmp_path / "nowhere" / "heavy-optimizer"
    broken = _analyze("verify", str(_installable_copy(tmp_path / "broken", missing)))
    assert broken.returncode != 0 and str(missing) in broken.stderr
    # When ExecStart points at an installed heavy-optimizer, verify is silent and content
    assert VENV_COMMAND.is_file(), f"{VENV_COMMAND} missing: is the project installed?"
    result = _analyze("verify", str(_installable_copy(tmp_path / "units")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_unit_security_exposure_stays_at_the_documented_level(tmp_path: Path) -> None:
    result = _analyze("security", "--offline=yes", "--no-pager",
                      str(_installable_copy(tmp_path / "units")))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for heavy-optimizer\.service: (\d+\.\d+)",
                      result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"exposure level {match.group(1)}" in readme, "README states another exposure"


def test_unit_fits_the_daemon_it_runs() -> None:
    unit = {key: values[-1] for key, values in unit_directives(UNIT).items()}
    defaults = JobProcessorConfig()
    assert unit["Type"] == "notify" and unit["NotifyAccess"] == "main"
    assert unit["KillMode"] == "mixed" and unit["Restart"] == "on-failure"
    assert unit["ExecStart"].split()[1] == "run"
    # Stop must outlast the drain plus the kill grace, or systemd SIGKILLs a draining daemon
    stop_seconds = float(unit["TimeoutStopSec"].removesuffix("s"))
    assert stop_seconds > defaults.drain_timeout + defaults.kill_grace_seconds
    # The share is the one writable place, and the unit waits for its mount
    assert unit["RequiresMountsFor"] == unit["ReadWritePaths"] == defaults.share_root
    assert unit["User"] not in ("", "root") and "DynamicUser" not in unit
    assert unit["ProtectSystem"] == "strict" and unit["NoNewPrivileges"] == "yes"
    # The configuration error exit status must not be restarted forever
    assert unit["RestartPreventExitStatus"] == "2"


def test_sysusers_and_tmpfiles_snippets_install_into_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    user = unit_directives(UNIT)["User"][-1]
    # When the snippets are applied to an empty root
    for tool, snippet, extra in (("systemd-sysusers", "heavy-optimizer.sysusers", []),
                                 ("systemd-tmpfiles", "heavy-optimizer.tmpfiles",
                                  ["--create"])):
        result = subprocess.run([_systemd_tool(tool), f"--root={root}", *extra,
                                 str(SYSTEMD_DIR / snippet)], capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, f"{tool}: {result.stderr}"
    # Then the service account exists, without a login shell
    accounts = {line.split(":")[0]: line.split(":") for line in
                (root / "etc" / "passwd").read_text().splitlines()}
    account = accounts[user]
    assert account[6].endswith("nologin")
    uid = int(account[2])
    # And the config folder is not readable by others; the share root belongs to the service
    config = os.stat(root / "etc" / "heavy-optimizer")
    assert config.st_mode & 0o007 == 0 and config.st_uid == 0
    credentials = os.stat(root / "etc" / "heavy-optimizer" / "credentials")
    assert credentials.st_mode & 0o077 == 0
    share = os.stat(root / JobProcessorConfig().share_root.lstrip("/"))
    assert share.st_uid == uid and share.st_mode & 0o007 == 0


@pytest.mark.timeout(120)
def test_real_job_runs_under_the_units_seccomp_sandbox(tmp_path: Path) -> None:
    # Given the unit's system call filter, address families, W^X memory and no-new-privileges
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(unit_policy(UNIT)))
    wrapper = [sys.executable, "-m", "tests.e2e.sandbox", str(policy)]
    probe = subprocess.run(
        [*wrapper, sys.executable, "-c",
         "import mmap, os, socket\n"
         "for attempt in (lambda: os.setuid(os.getuid()),\n"
         "                lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW),\n"
         "                lambda: mmap.mmap(-1, 4096, prot=7)):\n"
         "    try:\n"
         "        attempt()\n"
         "    except OSError as exc:\n"
         "        print(exc.errno)\n"],
        capture_output=True, text=True, timeout=60, check=True)
    # (the sandbox is really in force: setuid and W+X memory are refused, netlink too)
    assert probe.stdout.split() == ["1", "97", "1"], probe
    share = tmp_path / "share"
    config = make_config_dir(tmp_path / "cfg",
                             optimizer={"optimizer": {"algorithms": ["GA", "PSO", "SA", "DE",
                                                                     "ACO", "HC", "BO", "RS"]}})
    # When the daemon runs in it (forkserver, job processes and all) and a CSV is dropped
    with running_daemon(config, share, command_prefix=wrapper) as daemon:
        staged = share / "input" / ".upload.tmp"
        shutil.copy(SAMPLES_DIR / "sensex_82x500.csv", staged)
        os.replace(staged, share / "input" / "boxed_ps10.csv")
        final = wait_for(lambda: record(share, "completed", "boxed_ps10")
                         or record(share, "failed", "boxed_ps10"), timeout=90,
                         message="the sandboxed job")
        assert daemon.proc is not None
        status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    # Then it completed with every algorithm and chart, and nothing was refused on the way
    assert final is not None and final["status"] == "completed", final
    assert re.search(r"^Seccomp:\s+2$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$",
                                                                    status, re.M)
    summary = json.loads((share / "output" / "boxed_ps10" / "summary.json")
                                       .read_text())
    assert [run["status"] for run in summary["algorithms"]] == ["completed"] * 8
    assert (share / "output" / "boxed_ps10" / "equity_curve.png").stat().st_size > 0
    logs = daemon.output() + (share / "logs" / "jobs" / "boxed_ps10.log").read_text()
    assert "not permitted" not in logs.lower(), logs[-2000:]
