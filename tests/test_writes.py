"""Every file bridge writes is written atomically (issue 11, items 6-8): a failure injected mid-write (a full disk,
a failed rename or sync, Ctrl-C) leaves the old target byte for byte and no temporary file, and ends in a
``WriteError`` naming the path (or the KeyboardInterrupt itself); an ONNX model and its weights file change
together; new files follow the umask and replaced ones keep their mode.

The expected outputs of ONNX files come from the eager torch models (onnxruntime runs the files)."""
from __future__ import annotations

import errno
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import types

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

import bridge
from bridge import fileio
from bridge.cli import main
from bridge.errors import WriteError

MODELS = textwrap.dedent('''
    import torch
    import torch.nn as nn


    def make():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), (torch.randn(2, 16),)
''')

OLD = b"the old file, which must survive\n"


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)).eval()  # 4 KiB and 1 KiB of weights


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    spec = tmp_path_factory.mktemp("spec") / "models.py"
    spec.write_text(MODELS)
    old, new, x = mlp(0), mlp(1), torch.randn(3, 16)
    with torch.no_grad():
        want = {"old": old(x).numpy(), "new": new(x).numpy()}
    return types.SimpleNamespace(old=old, new=new, x=x, want=want, graph=bridge.trace(new, (x,)),
                                 spec=f"{spec}:make")


def files(folder) -> dict[str, bytes]:
    """Every file in ``folder`` (temporary ones included), name -> bytes."""
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))}


def which(ctx, path) -> str:
    """'old' or 'new': the eager model whose outputs onnxruntime gives on the file at ``path``."""
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": ctx.x.numpy()})[0]
    matches = [k for k, want in ctx.want.items() if np.allclose(got, want, rtol=1e-5, atol=1e-6)]
    assert len(matches) == 1, f"{path}: outputs match {matches or 'neither model'}"
    return matches[0]


def data_files(folder, base="m.onnx") -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(base + ".") and n.endswith(".data"))


# ---- each writer, with a failure injected mid-write --------------------------------------------------------
API = {  # writer -> (file name, write the new version)
    "onnx": ("m.onnx", lambda c, p: bridge.to_onnx(c.new, p, args=(c.x,))),
    "onnx-external": ("m.onnx", lambda c, p: bridge.to_onnx(c.new, p, args=(c.x,), external_data=True)),
    "dot": ("g.dot", lambda c, p: bridge.draw(c.graph, p)),
    "mmd": ("g.mmd", lambda c, p: bridge.draw(c.graph, p)),
    "html": ("g.html", lambda c, p: bridge.draw(c.graph, p)),
    "svg": ("g.svg", lambda c, p: bridge.draw(c.graph, p)),
}
CLI = {  # writer -> (file name, argv)
    "report": ("r.md", lambda c, p: ["report", c.spec, "-o", str(p)]),
    "sequential": ("seq.pt", lambda c, p: ["sequential", c.spec, "--save", str(p)]),
}


def existing(ctx, folder, writer: str, name: str):
    """A good target already there: the old model's pair for external data, else a file of known bytes."""
    path = folder / name
    if writer == "onnx-external":
        bridge.to_onnx(ctx.old, path, args=(ctx.x,), external_data=True)
    else:
        path.write_bytes(OLD)
    return path


def inject(monkeypatch, where: str, exc: BaseException) -> None:
    """Make the write fail: the file object's ``write`` after half its bytes, or the rename, or the sync."""
    def fail(*a, **k):
        raise exc

    if where == "write":
        create = fileio._create

        def failing_create(*a, **k):
            f = create(*a, **k)
            write = f.write

            def half(data):
                write(data[: len(data) // 2])
                raise exc

            f.write = half
            return f

        monkeypatch.setattr(fileio, "_create", failing_create)
    else:
        if where == "fsync":
            monkeypatch.setenv("BRIDGE_FSYNC", "1")  # writes sync only when asked to
        monkeypatch.setattr(os, where, fail)


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


FAULTS = ["write", "replace", "fsync"]
EXCS = {"ENOSPC": enospc, "KeyboardInterrupt": KeyboardInterrupt}


@pytest.mark.fault
@pytest.mark.parametrize("writer, where, exc", [
    (writer, where, exc) for writer in API for where in FAULTS for exc in EXCS
    if (writer, where) != ("svg", "write")])  # graphviz writes the .svg through the descriptor, not the file object
def test_api_writer_failure_keeps_the_old_target(ctx, tmp_path, monkeypatch, writer, where, exc):
    name, write = API[writer]
    path = existing(ctx, tmp_path, writer, name)
    before = files(tmp_path)
    inject(monkeypatch, where, EXCS[exc]())
    with pytest.raises(KeyboardInterrupt if exc == "KeyboardInterrupt" else WriteError) as info:
        write(ctx, path)
    monkeypatch.undo()
    assert files(tmp_path) == before  # byte for byte, and no temporary file
    if exc == "ENOSPC":
        err = info.value
        assert str(path) in str(err) and "No space left on device" in str(err) and "free space" in str(err)
        assert isinstance(err, OSError) and err.errno == errno.ENOSPC
        assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.ENOSPC
    if writer == "onnx-external":
        assert which(ctx, path) == "old"


@pytest.mark.fault
@pytest.mark.parametrize("exc", list(EXCS))
@pytest.mark.parametrize("where", FAULTS)
@pytest.mark.parametrize("writer", list(CLI))
def test_cli_writer_failure_keeps_the_old_target(ctx, tmp_path, monkeypatch, capsys, writer, where, exc):
    name, argv = CLI[writer]
    path = existing(ctx, tmp_path, writer, name)
    before = files(tmp_path)
    inject(monkeypatch, where, EXCS[exc]())
    rc = main(argv(ctx, path))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert files(tmp_path) == before
    if exc == "ENOSPC":
        assert rc == 2 and str(path) in err and "No space left on device" in err
    else:
        assert rc == 130 and "interrupted" in err


def test_writers_replace_the_old_target(ctx, tmp_path, capsys):
    """Without a fault every writer replaces the old file, and leaves nothing else."""
    for writer, (name, write) in API.items():
        folder = tmp_path / writer
        folder.mkdir()
        path = existing(ctx, folder, writer, name)
        write(ctx, path)
        assert path.read_bytes() != OLD
        assert sorted(os.listdir(folder)) == ([name, *data_files(folder)] if writer == "onnx-external" else [name])
    for writer, (name, argv) in CLI.items():
        path = existing(ctx, tmp_path, writer, name)
        assert main(argv(ctx, path)) == 0
        assert path.read_bytes() != OLD
    capsys.readouterr()
    seq = torch.load(tmp_path / "seq.pt", weights_only=False)  # the whole Sequential, as bridge sequential saves it
    assert len(seq.state_dict()) == 4  # two linear layers' weight and bias
    assert sorted(os.listdir(tmp_path)) == sorted([*API, "r.md", "seq.pt"])


# ---- the model and its weights file change together --------------------------------------------------------
def test_external_pair_is_read_by_onnxruntime_onnx_and_bridge(ctx, tmp_path):
    path = tmp_path / "m.onnx"
    bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    (data,) = data_files(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", data]
    assert data.startswith("m.onnx.") and len(data) == len("m.onnx.") + 16 + len(".data")
    assert which(ctx, path) == "new"
    loaded = onnx.load(str(path))  # reads the weights file named in the model
    weights = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    for k, v in ctx.new.state_dict().items():
        assert any(w.shape == v.shape and np.array_equal(w, v.numpy()) for w in weights.values()), k
    got = bridge.from_onnx(path).run(ctx.x)
    np.testing.assert_allclose(got.detach().numpy(), ctx.want["new"], rtol=1e-5, atol=1e-6)


def test_every_step_of_a_pair_write_leaves_a_whole_model(ctx, tmp_path, monkeypatch):
    """The folder is copied before and after every rename and removal of a re-export, as a crash there would
    leave it: each copy holds a model that runs, as the old model or the new one, never a mix."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "m.onnx"
    bridge.to_onnx(ctx.old, path, args=(ctx.x,), external_data=True)
    snapshots = []
    real_replace, real_unlink = os.replace, os.unlink

    def replace(a, b):
        snapshots.append(files(folder))
        real_replace(a, b)
        snapshots.append(files(folder))

    def unlink(p):
        snapshots.append(files(folder))
        real_unlink(p)
        snapshots.append(files(folder))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    monkeypatch.undo()
    assert len(snapshots) == 6  # the weights renamed, the model renamed (the commit), the old weights removed
    seen = []
    for i, snap in enumerate(snapshots):
        crash = tmp_path / f"crash{i}"
        crash.mkdir()
        for name, data in snap.items():
            (crash / name).write_bytes(data)
        seen.append(which(ctx, crash / "m.onnx"))
    assert seen == ["old"] * 3 + ["new"] * 3
    assert len(data_files(folder)) == 1 and which(ctx, path) == "new"


@pytest.mark.fault
@pytest.mark.parametrize("exc", list(EXCS))
def test_failure_after_the_weights_before_the_model_keeps_the_old_pair(ctx, tmp_path, monkeypatch, exc):
    path = tmp_path / "m.onnx"
    bridge.to_onnx(ctx.old, path, args=(ctx.x,), external_data=True)
    before = files(tmp_path)
    real_replace = os.replace
    calls = []

    def replace(a, b):
        calls.append(b)
        if len(calls) == 2:  # the weights are in place under their new name; now the model
            raise EXCS[exc]()
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt if exc == "KeyboardInterrupt" else WriteError) as info:
        bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    monkeypatch.undo()
    assert calls[0].endswith(".data") and calls[1] == str(path)
    assert files(tmp_path) == before  # the new weights file went again
    assert which(ctx, path) == "old"
    if exc == "ENOSPC":
        assert str(path) in str(info.value)


@pytest.mark.fault
def test_failed_check_keeps_the_old_pair(ctx, tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    bridge.to_onnx(ctx.old, path, args=(ctx.x,), external_data=True)
    before = files(tmp_path)

    def refuse(*a, **k):
        raise onnx.checker.ValidationError("refused by the test")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(onnx.checker.ValidationError):
        bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    monkeypatch.undo()
    assert files(tmp_path) == before


@pytest.mark.fault
def test_failure_removing_the_old_weights_leaves_the_new_pair(ctx, tmp_path, monkeypatch):
    """After the commit the write has succeeded: an old weights file that cannot be removed is a warning naming
    it; a Ctrl-C there stops the program, with the new model in place."""
    path = tmp_path / "m.onnx"
    bridge.to_onnx(ctx.old, path, args=(ctx.x,), external_data=True)
    (old_data,) = data_files(tmp_path)

    def refuse(p):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), p)

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.warns(UserWarning, match=old_data):
        bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    monkeypatch.undo()
    assert which(ctx, path) == "new" and len(data_files(tmp_path)) == 2

    os.remove(tmp_path / old_data)
    bridge.to_onnx(ctx.old, path, args=(ctx.x,), external_data=True)
    assert which(ctx, path) == "old" and len(data_files(tmp_path)) == 1

    def interrupt(p):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "unlink", interrupt)
    with pytest.raises(KeyboardInterrupt):
        bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    monkeypatch.undo()
    assert which(ctx, path) == "new" and len(data_files(tmp_path)) == 2


def test_same_weights_keep_their_file_and_foreign_files_stay(ctx, tmp_path):
    path = tmp_path / "m.onnx"
    foreign = {"m.onnx.data": b"torch.onnx wrote me", "m.onnx.0123456789abcdef.data": b"not referenced"}
    for name, data in foreign.items():
        (tmp_path / name).write_bytes(data)
    bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    ours = set(data_files(tmp_path)) - set(foreign)
    bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)  # the same weights: the same file
    assert set(data_files(tmp_path)) - set(foreign) == ours
    bridge.to_onnx(ctx.new, path, args=(ctx.x,))  # one file now: the weights file it replaced goes
    assert set(os.listdir(tmp_path)) == {"m.onnx", *foreign}
    assert all((tmp_path / n).read_bytes() == d for n, d in foreign.items())
    assert which(ctx, path) == "new"


def test_save_with_external_data_leaves_the_proto_as_it_was(ctx, tmp_path):
    from bridge.backends import onnx as backend

    proto = bridge.to_onnx(ctx.new, None, args=(ctx.x,))
    blob = proto.SerializeToString()
    backend.save(proto, tmp_path / "m.onnx", external_data=True)
    assert proto.SerializeToString() == blob
    assert len(data_files(tmp_path)) == 1 and which(ctx, tmp_path / "m.onnx") == "new"


# ---- bad destinations ------------------------------------------------------------------------------------
@pytest.mark.fault
@pytest.mark.parametrize("writer", ["dot", "html", "report", "sequential"])
def test_missing_folder(ctx, tmp_path, capsys, writer):
    name, write = (API | CLI)[writer]
    path = tmp_path / "missing" / name
    if writer in API:
        with pytest.raises(WriteError) as info:
            write(ctx, path)
        msg = str(info.value)
        assert info.value.errno == errno.ENOENT
    else:
        assert main(write(ctx, path)) == 2
        msg = capsys.readouterr().err
    assert str(path) in msg and "does not exist" in msg and "mkdir" in msg
    assert os.listdir(tmp_path) == []


def test_onnx_makes_its_folder(ctx, tmp_path):
    path = tmp_path / "new" / "deeper" / "m.onnx"
    bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    assert which(ctx, path) == "new"


@pytest.mark.fault
@pytest.mark.parametrize("writer", ["onnx", "onnx-external", "dot", "svg", "report"])
def test_path_is_a_folder(ctx, tmp_path, capsys, writer):
    name, write = (API | CLI)[writer]
    path = tmp_path / name
    path.mkdir()
    (path / "inside").write_bytes(OLD)
    if writer in API:
        with pytest.raises(WriteError) as info:
            write(ctx, path)
        msg = str(info.value)
        assert info.value.errno == errno.EISDIR
    else:
        assert main(write(ctx, path)) == 2
        msg = capsys.readouterr().err
    assert str(path) in msg and "is a folder" in msg
    assert os.listdir(tmp_path) == [name] and os.listdir(path) == ["inside"]


@pytest.mark.fault
@pytest.mark.parametrize("writer", ["onnx", "dot"])
def test_a_file_where_the_folder_should_be(ctx, tmp_path, writer):
    (tmp_path / "file").write_bytes(OLD)
    name, write = API[writer]
    path = tmp_path / "file" / name
    with pytest.raises(WriteError) as info:
        write(ctx, path)
    assert str(path) in str(info.value) and "not a folder" in str(info.value)
    assert os.listdir(tmp_path) == ["file"] and (tmp_path / "file").read_bytes() == OLD


CHILD = textwrap.dedent('''
    import os, sys
    import torch
    import bridge
    from bridge.cli import main

    spec, warm, target, drop = sys.argv[1:]
    g = bridge.trace(torch.nn.Sequential(torch.nn.Linear(64, 64)), (torch.randn(1, 64),))
    writes = {"g.dot": lambda p: bridge.draw(g, p), "m2.onnx": lambda p: bridge.to_onnx(g, p, external_data=True)}
    for name, write in writes.items():  # loads every module the writers need
        write(os.path.join(warm, name))
    assert main(["report", spec, "-o", os.path.join(warm, "r.md")]) == 0
    if drop == "1":  # /root (where python lives) is closed to others: drop root only now
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    for name, write in writes.items():
        try:
            write(os.path.join(target, name))
            print("written", name)
        except bridge.errors.WriteError as e:
            print(e.errno, e)
    print(main(["report", spec, "-o", os.path.join(target, "r.md")]))
''')


@pytest.mark.fault
def test_read_only_folder_as_another_user():
    """A folder this user may not write to (0555; as root, dropping to nobody, since root writes anywhere): a
    drawing and an ONNX pair end in ``WriteError`` (EACCES) naming the file, ``bridge report -o`` exits 2 naming
    it, and nothing is written. The folders are made under the system's temporary folder: pytest's own is closed
    to other users."""
    drop = os.geteuid() == 0
    top = tempfile.mkdtemp(prefix="bridge-writes-")
    try:
        os.chmod(top, 0o755)
        spec_file = os.path.join(top, "models.py")
        with open(spec_file, "w") as f:
            f.write(MODELS)
        ro, warm = os.path.join(top, "ro"), os.path.join(top, "warm")
        os.mkdir(ro, 0o555)
        os.mkdir(warm)
        os.chmod(ro, 0o555)
        if drop and not all(os.stat(p).st_mode & 0o001 for p in _parents(top)):
            pytest.skip(f"{top}: a parent folder is closed to other users")
        r = subprocess.run([sys.executable, "-c", CHILD, f"{spec_file}:make", warm, ro, "1" if drop else "0"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        *api, cli = r.stdout.strip().splitlines()[-3:]
        for line, name in zip(api, ("g.dot", "m2.onnx")):  # the API: WriteError, EACCES, naming the file
            assert line.startswith(f"{errno.EACCES} cannot write ") and os.path.join(ro, name) in line
            assert "Permission denied" in line and "may not write there" in line
        assert cli == "2"  # the CLI: exit status 2, one paragraph naming the file
        assert os.path.join(ro, "r.md") in r.stderr and "may not write" in r.stderr and "Traceback" not in r.stderr
        assert os.listdir(ro) == []
    finally:
        os.chmod(os.path.join(top, "ro"), 0o755)
        shutil.rmtree(top)


def _parents(path: str) -> list[str]:
    out = []
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        out.append(path)
    return out


# ---- modes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027])
def test_new_files_follow_the_umask(ctx, tmp_path, capsys, mask):
    old = os.umask(mask)
    try:
        assert fileio.umask() == mask
        bridge.to_onnx(ctx.new, tmp_path / "one.onnx", args=(ctx.x,))
        bridge.to_onnx(ctx.new, tmp_path / "m.onnx", args=(ctx.x,), external_data=True)
        bridge.draw(ctx.graph, tmp_path / "g.dot")
        bridge.draw(ctx.graph, tmp_path / "g.svg")
        assert main(["report", ctx.spec, "-o", str(tmp_path / "r.md")]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 6
    assert {n: oct(os.stat(tmp_path / n).st_mode & 0o777) for n in names} == {n: oct(0o666 & ~mask) for n in names}


def test_replaced_files_keep_their_mode_and_owner(ctx, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    bridge.to_onnx(ctx.old, path, args=(ctx.x,), external_data=True)
    (old_data,) = data_files(tmp_path)
    others = {"g.dot": lambda p: bridge.draw(ctx.graph, p),
              "g.svg": lambda p: bridge.draw(ctx.graph, p),
              "r.md": lambda p: main(["report", ctx.spec, "-o", str(p)])}
    for name in others:
        (tmp_path / name).write_bytes(OLD)
    owner = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    for name in [*others, "m.onnx", old_data]:
        os.chown(tmp_path / name, *owner)
        os.chmod(tmp_path / name, 0o640)
    bridge.to_onnx(ctx.new, path, args=(ctx.x,), external_data=True)
    for name, write in others.items():
        write(tmp_path / name)
    capsys.readouterr()
    (new_data,) = data_files(tmp_path)
    assert new_data != old_data and which(ctx, path) == "new"
    for name in [*others, "m.onnx", new_data]:
        st = os.stat(tmp_path / name)
        assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == (oct(0o640), *owner), name
        assert (tmp_path / name).read_bytes() != OLD


def test_umask_is_read_without_changing_it_in_threads():
    old = os.umask(0o027)
    try:
        seen = []
        threads = [threading.Thread(target=lambda: seen.append(fileio.umask())) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [0o027] * 8 and os.umask(0o027) == 0o027
    finally:
        os.umask(old)


# ---- what cannot be replaced, and links -------------------------------------------------------------------
def test_a_link_is_written_through(ctx, tmp_path):
    real = tmp_path / "real.dot"
    real.write_bytes(OLD)
    link = tmp_path / "link.dot"
    link.symlink_to(real)
    bridge.draw(ctx.graph, link)
    assert link.is_symlink() and real.read_text().startswith("digraph")


def test_a_fifo_is_written_in_place(ctx, tmp_path, capsys):
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert main(["report", ctx.spec, "-o", str(fifo)]) == 0
    reader.join(timeout=60)
    capsys.readouterr()
    assert got and got[0].startswith(b"#") and os.listdir(tmp_path) == ["pipe.md"]


def test_atomic_write_directly(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(OLD)
    with pytest.raises(ValueError, match="mode"), fileio.atomic_write(path, "a"):
        pass
    with pytest.raises(RuntimeError, match="mine"), fileio.atomic_write(path) as f:
        f.write("half")
        raise RuntimeError("mine")  # not an OSError: passes through unchanged
    assert files(tmp_path) == {"f.txt": OLD}
    with fileio.atomic_write(path) as f:
        f.write("né\n")
        f.flush()
        temp = pathlib.Path(f.name)  # a checker can read the temporary file by its path
        assert temp.parent == tmp_path and temp.read_text(encoding="utf-8") == "né\n"
    assert path.read_text(encoding="utf-8") == "né\n" and os.listdir(tmp_path) == ["f.txt"]
    err = fileio.write_error(str(path), OSError(errno.EROFS, os.strerror(errno.EROFS)))
    assert isinstance(err, WriteError) and isinstance(err, bridge.BridgeError) and "read-only" in str(err)


def test_hashed_write_names_the_file_after_all_its_bytes_in_order(tmp_path):
    """The hash runs on its own thread beside the writes: the name is still the sha256 of the bytes in the order
    written (memoryviews of one buffer, small and large), and a block that fails leaves nothing and raises its own
    error."""
    import hashlib

    data = np.arange(3 * 2**20, dtype=np.uint8)
    view = memoryview(data)
    pieces = [view[:7], view[7:2**20], b"header", view[2**20:], view[5:9]]
    with fileio.hashed_write(tmp_path, "w.{}.data") as f:
        for p in pieces:
            f.write(p)
    whole = b"".join(bytes(p) for p in pieces)
    assert os.path.basename(f.name) == f"w.{hashlib.sha256(whole).hexdigest()[:16]}.data" and f.created
    assert pathlib.Path(f.name).read_bytes() == whole
    with pytest.raises(RuntimeError, match="mine"), fileio.hashed_write(tmp_path, "x.{}.data") as g:
        g.write(view)
        raise RuntimeError("mine")
    assert os.listdir(tmp_path) == [os.path.basename(f.name)]


@pytest.mark.parametrize("setting, syncs", [(None, False), ("0", False), ("1", True), ("yes", True)])
def test_writes_sync_only_when_asked(ctx, tmp_path, monkeypatch, setting, syncs):
    """Like torch.save and onnx.save, a write is not synced to disk unless BRIDGE_FSYNC asks for it; then the
    weights file, the model file and the folder after each rename are synced (fsync on a file, then on a folder)."""
    if setting is None:
        monkeypatch.delenv("BRIDGE_FSYNC", raising=False)
    else:
        monkeypatch.setenv("BRIDGE_FSYNC", setting)
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append("folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    bridge.to_onnx(ctx.new, tmp_path / "m.onnx", args=(ctx.x,), external_data=True)
    monkeypatch.undo()
    assert which(ctx, tmp_path / "m.onnx") == "new"
    assert synced == (["file", "folder", "file", "folder"] if syncs else [])
