"""tools/get-fashion-mnist.sh, the data step of `make demo` and `.ci/run`, without network or root.

The script runs with `PATH` holding only fakes: `id` prints `$FAKE_UID`, `sudo` and `apt-get`
append their arguments to `$FAKE_LOG`; the fake `apt-get install` writes the four idx files into
`$FAKE_APT_DIR` (default `$KERASBNN_DATA_DIR`) as the package would into its directory, or exits
`$FAKE_APT_STATUS`.
"""

import os
import shutil
import subprocess

import pytest

from kerasbnn.data import fashion_mnist
from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "tools" / "get-fashion-mnist.sh"
BASH = shutil.which("bash")
FAKES = {
    "id": '[ "$1" = -u ] && echo "$FAKE_UID"',
    "sudo": 'echo "sudo $*" >> "$FAKE_LOG"\n'
            'while [[ $1 == *=* ]]; do export "$1"; shift; done\nexec "$@"',
    "apt-get": 'echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> "$FAKE_LOG"\n'
               '[ "${FAKE_APT_STATUS:-0}" = 0 ] || exit "$FAKE_APT_STATUS"\n'
               '[ "$1" = install ] || exit 0\n'
               'for f in ' + " ".join(f for pair in fashion_mnist.IDX_FILES.values() for f in pair)
               + '; do echo data > "${FAKE_APT_DIR:-$KERASBNN_DATA_DIR}/$f"; done',
}


def _fake_bin(tmp_path, names):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in names:
        path = folder / name
        path.write_text(f"#!{BASH}\n{FAKES[name]}\n")
        path.chmod(0o755)
    return folder


def _env(tmp_path, path, uid, **extra):
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    return {"PATH": str(path), "FAKE_UID": str(uid), "FAKE_LOG": str(tmp_path / "log"),
            "KERASBNN_DATA_DIR": str(data_dir), "HOME": str(tmp_path), **extra}


def _run(tmp_path, fakes=("id", "sudo", "apt-get"), uid=1000, **extra):
    """Runs the script; returns `(exit status, stdout, stderr, fake command log lines)`."""
    env = _env(tmp_path, _fake_bin(tmp_path, fakes), uid, **extra)
    done = subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)
    log = tmp_path / "log"
    lines = log.read_text().splitlines() if log.exists() else []
    return done.returncode, done.stdout, done.stderr, lines


def _data_files(tmp_path):
    return sorted(os.listdir(tmp_path / "data"))


def test_present_files_install_nothing(tmp_path, fake_fashion_mnist):
    status, out, _, log = _run(tmp_path, KERASBNN_DATA_DIR=str(fake_fashion_mnist.dir))
    assert status == 0 and log == []
    assert f"found in {fake_fashion_mnist.dir}" in out


def test_missing_files_install_the_package_through_sudo(tmp_path):
    status, out, err, log = _run(tmp_path, uid=1000)
    assert status == 0, err
    assert log == [
        "sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "apt-get update -qq DEBIAN_FRONTEND=noninteractive",
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist",
        "apt-get install -y -qq dataset-fashion-mnist DEBIAN_FRONTEND=noninteractive",
    ]
    assert "with sudo apt-get" in out and len(_data_files(tmp_path)) == 4


def test_root_installs_with_apt_get_directly(tmp_path):
    status, _, err, log = _run(tmp_path, fakes=("id", "apt-get"), uid=0)
    assert status == 0, err
    assert log == [
        "apt-get update -qq DEBIAN_FRONTEND=noninteractive",
        "apt-get install -y -qq dataset-fashion-mnist DEBIAN_FRONTEND=noninteractive",
    ]


def test_not_root_without_sudo_prints_the_command(tmp_path):
    status, _, err, log = _run(tmp_path, fakes=("id", "apt-get"), uid=1000)
    assert status == 1 and log == []
    assert "not root and no sudo" in err
    assert "apt-get install -y dataset-fashion-mnist" in err and "Traceback" not in err


@pytest.mark.parametrize("uid, sudo", [(0, ""), (1000, "sudo ")])
def test_failing_apt_get_prints_the_command(tmp_path, uid, sudo):
    status, _, err, log = _run(tmp_path, uid=uid, FAKE_APT_STATUS="100")
    assert status == 1 and log[-1].startswith("apt-get install")
    assert f"{sudo}apt-get install dataset-fashion-mnist failed" in err
    assert f"\n    {sudo}apt-get update && {sudo}apt-get install -y dataset-fashion-mnist" in err
    assert _data_files(tmp_path) == []


def test_without_apt_get_prints_a_download_command(tmp_path):
    status, _, err, log = _run(tmp_path, fakes=("id",))
    assert status == 1 and log == []
    assert "no apt-get" in err and "export KERASBNN_DATA_DIR=" in err
    for pair in fashion_mnist.IDX_FILES.values():
        for name in pair:
            assert f"/{name}" in err


def test_data_dir_elsewhere_than_the_package_says_so(tmp_path):
    package_dir = tmp_path / "package"
    package_dir.mkdir()
    status, _, err, _ = _run(tmp_path, uid=0, FAKE_APT_DIR=str(package_dir))
    assert status == 1 and len(os.listdir(package_dir)) == 4
    assert "KERASBNN_DATA_DIR points elsewhere" in err and "unset KERASBNN_DATA_DIR" in err


def test_make_demo_runs_the_data_step_first(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on PATH")
    fakes = _fake_bin(tmp_path, ("id", "apt-get"))
    env = _env(tmp_path, f"{fakes}:{os.path.dirname(make)}:{os.path.dirname(BASH)}", 0)
    done = subprocess.run([make, "-s", "-C", str(REPO_ROOT), "data"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(_data_files(tmp_path)) == 4 and "installed in" in done.stdout
    plan = subprocess.run([make, "-n", "-C", str(REPO_ROOT), "demo", "VENV=/nonexistent/venv"],
                          capture_output=True, text=True, timeout=60).stdout
    assert plan.index("get-fashion-mnist.sh") < plan.index("kerasbnn pipeline")
