"""The one checkpoint loader, checkpoint.load_network: every variant, older checkpoints, bad files in one line."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from lenet_np import LeNet, checkpoint, evaluate, visualize
from lenet_np import trace as trace_mod
from lenet_np.model import VARIANTS


# -- the one checkpoint loader: checkpoint.load_network ------------------------------------------
def saved_network(path, settings, **kwargs):
    """A LeNet as train saves it (its BatchNorm statistics moved away from their start), and its checkpoint."""
    net = LeNet(**kwargs)
    net(np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32))     # training mode: statistics move
    checkpoint.save(path, net, None, {"epoch": 3, **({"settings": settings} if settings is not None else {})})
    return net


def same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(np.array_equal(np.asarray(sa[k]), np.asarray(sb[k])) for k in sa)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_load_network_rebuilds_the_checkpoints_network(tmp_path, variant):
    path = tmp_path / "ck.npz"
    settings = {"variant": variant, "activation": "relu", "pool": "max", "seed": 3}
    saved = saved_network(path, settings, variant=variant, activation="relu", pool="max", seed=3)
    net, meta = checkpoint.load_network(path)
    assert (net.variant, net.activation, net.pool) == (variant, "relu", "max")
    assert same_state(net, saved) and net.training and meta["epoch"] == 3 and meta["settings"] == settings


@pytest.mark.parametrize("settings,kwargs", [
    (None, {}),                                                  # no settings at all
    ({"activation": "relu", "pool": "avg", "seed": 0}, {"activation": "relu", "pool": "avg"}),   # before variants
    ({"variant": "seed", "activation": "sigmoid", "pool": "max"}, {}),   # the default variant's earlier name
], ids=["no settings", "no variant", "earlier variant name"])
def test_load_network_reads_older_checkpoints(tmp_path, settings, kwargs):
    path = tmp_path / "old.npz"
    saved = saved_network(path, settings, seed=5, **kwargs)
    net, _ = checkpoint.load_network(path)
    assert net.variant == LeNet().variant and (net.activation, net.pool) == (saved.activation, saved.pool)
    assert same_state(net, saved)


def damage(path, how):
    """Write at ``path`` a file that load_network must refuse; the words its error must hold."""
    if how == "missing":
        return "no such file"
    if how == "not a checkpoint":
        path.write_text("epoch,loss\n1,2.3\n")
        return "not an .npz (zip) archive"
    if how == "foreign npz":
        np.savez(path, weights=np.zeros(3))
        return "no 'meta' entry, so not a lenet_np checkpoint"
    saved_network(path, {"activation": "sigmoid", "pool": "max"}, seed=0)
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
        return "corrupt or truncated"
    if how == "corrupt":                                     # bytes flipped inside the largest weight
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("param/fc.0.weight.npy")
        middle = info.header_offset + info.compress_size // 2
        path.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 8]) + raw[middle + 8:])
        return "corrupt or truncated"
    if how == "meta not JSON":
        with np.load(path) as z:
            files = dict(z)
        np.savez(path, **dict(files, meta=np.array("{epoch: 3")))
        return "its 'meta' entry is not valid JSON"
    if how == "another network":                             # d2l's weights, settings that name the default
        checkpoint.save(path, LeNet(variant="d2l"), None, {"settings": {"activation": "sigmoid"}})
        return "does not fit LeNet(activation='sigmoid'): load_state_dict for LeNet failed: missing keys"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing", "not a checkpoint", "foreign npz", "truncated", "corrupt",
                                 "meta not JSON", "another network"])
def test_load_network_refuses_a_bad_file_in_one_line(tmp_path, how):
    path = tmp_path / "ck.npz"
    words = damage(path, how)
    with pytest.raises(checkpoint.CheckpointError) as exc:
        checkpoint.load_network(path)
    msg = str(exc.value)
    assert msg.startswith(f"checkpoint {path}") and words in msg and "\n" not in msg, msg


def test_the_tools_load_checkpoints_one_way(tmp_path, capsys, no_data):
    """evaluate, trace and visualize read a checkpoint through load_network: the same network,
    and the same one-line error for a corrupt file."""
    assert "read_checkpoint" not in vars(trace_mod) and "load_model" not in vars(evaluate)
    path = tmp_path / "ck.npz"
    damage(path, "corrupt")
    assert trace_mod.main(["--checkpoint", str(path)]) == 1
    assert visualize.main(["--checkpoint", str(path), "--out", str(tmp_path / "out")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and errors[0] == errors[1] and errors[0].startswith(f"error: checkpoint {path}: ")
