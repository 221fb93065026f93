"""Configuration and command line (node.md §7, §6.3 -buildhint, §10 "Config")."""

import os
import signal
import socket
import subprocess
import time

import pytest
import yaml

import beansfmt as bf
from nodeproc import RawClient, ReplyError, free_port, keys_in_bucket


def run_cli(binary, args, cwd, timeout=15.0):
    """Run `beansdb args…`; (returncode, stdout, stderr). A process still running after
    `timeout` (e.g. a bad config that was accepted and started serving) is killed and fails."""
    try:
        p = subprocess.run([binary] + list(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("beansdb %s did not exit within %.0fs (stderr: %r)" % (args, timeout, e.stderr))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def wait_ready(port, proc, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "beansdb exited with %s during startup" % proc.returncode
        try:
            with RawClient(port, timeout=2.0) as c:
                c.retrieve(b"get @")
                return
        except (OSError, ConnectionError, ReplyError):
            time.sleep(0.05)
    raise AssertionError("beansdb not ready on port %d" % port)


def http_json(webport, path):
    import json
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (webport, path), timeout=5) as r:
        return json.loads(r.read())


def stop_proc(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


# ---------------------------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------------------------

def test_version_flag(node_binary, tmp_path):
    rc, out, err = run_cli(node_binary, ["-version"], str(tmp_path))
    assert rc == 0
    assert out.startswith("beansdb version 2.1"), out
    assert len(out.strip().split(" ")) == 3, out
    assert not os.listdir(str(tmp_path)), "-version must not create files"


def test_unknown_flag_fails(node_binary, tmp_path):
    rc, out, err = run_cli(node_binary, ["-nosuchflag"], str(tmp_path))
    assert rc != 0
    assert (out + err).strip(), "a usage/error message is printed"


def test_dumpconf_reloads_to_same_config(node_factory, node_binary, tmp_path):
    overrides = {"server": {"threads": 3},
                 "mc": {"body_max_str": "2M", "max_req": 7, "timeout_ms": 1234},
                 "hstore": {"data": {"check_vhash": False, "fsync": "always", "datafile_max_str": "64M",
                                     "not_compress": {"image/png": True}, "fsync_interval_ms": 250},
                            "hint": {"hint_split_cap_str": "2K"},
                            "htree": {"tree_height": 4},
                            "gc": {"garbage_ratio": 0.3, "window": "01:00-05:00"}}}
    node = node_factory(overrides=overrides)
    cfg_a = node.http_json("/config")
    assert node.stop() == 0

    rc, out1, err = run_cli(node_binary, ["-confdir", node.confdir, "-dumpconf"], node.workdir)
    assert rc == 0, err
    dumped = yaml.safe_load(out1)
    assert set(dumped) >= {"server", "mc", "hstore"}
    assert dumped["mc"]["body_max_str"] == "2M" and dumped["mc"]["max_req"] == 7
    assert dumped["hstore"]["data"]["fsync"] == "always"
    assert dumped["hstore"]["data"]["check_vhash"] is False
    assert dumped["hstore"]["htree"]["tree_height"] == 4
    assert {"image/png", "audio/wave", "audio/mpeg"} <= set(dumped["hstore"]["data"]["not_compress"])

    conf2 = tmp_path / "conf2"
    conf2.mkdir()
    (conf2 / "global.yaml").write_text(out1)
    with open(os.path.join(node.confdir, "route.yaml")) as f:
        (conf2 / "route.yaml").write_text(f.read())
    rc, out2, err = run_cli(node_binary, ["-confdir", str(conf2), "-dumpconf"], node.workdir)
    assert rc == 0, err
    assert out2 == out1, "-dumpconf of the dumped config differs"

    # and a node started from the dumped config has the same effective config
    proc = subprocess.Popen([node_binary, "-confdir", str(conf2)], cwd=node.workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(node.port, proc)
        cfg_b = http_json(node.webport, "/config")
    finally:
        assert stop_proc(proc) == 0
    assert cfg_b == cfg_a


# ---------------------------------------------------------------------------------------------
# bad configs
# ---------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    ("size_suffix", {"mc": {"body_max_str": "12Q"}}, None, "body_max_str"),
    ("size_overflow_i32", {"mc": {"flush_max_str": "3000000000"}}, None, "flush_max_str"),
    ("datafile_max_too_big", {"hstore": {"data": {"datafile_max_str": "5G"}}}, None, "datafile_max"),
    ("tree_height_9", {"hstore": {"htree": {"tree_height": 9}}}, None, "tree_height"),
    ("tree_height_1", {"hstore": {"htree": {"tree_height": 1}}}, None, "tree_height"),
    ("fsync_value", {"hstore": {"data": {"fsync": "sometimes"}}}, None, "fsync"),
    ("max_key_len_zero", {"mc": {"max_key_len": 0}}, None, "empty struct"),
    ("numbucket_15", None, {"numbucket": 15}, "numbucket"),
    ("bucket_id_g", None, {"main": [{"addr": "127.0.0.1:1", "buckets": ["0", "g"]}]}, "bucket"),
    ("bucket_id_too_big", None, {"main": [{"addr": "127.0.0.1:1", "buckets": ["10"]}]}, "bucket"),
]


@pytest.mark.parametrize("name,overrides,route_extra,needle", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_fails(node_factory, node_binary, name, overrides, route_extra, needle):
    node = node_factory(overrides=overrides, route_extra=route_extra, start=False)
    node.port, node.webport = free_port(), free_port()
    node.write_conf()
    rc, out, err = run_cli(node_binary, ["-confdir", node.confdir], node.workdir)
    msg = out + err
    if os.path.exists(node.log_path):
        with open(node.log_path, errors="replace") as f:
            msg += f.read()
    assert rc != 0, "%s: a bad config must exit non-zero" % name
    assert needle in msg.lower() or needle in msg, "%s: message must name %r, got %r" % (name, needle, msg[-500:])
    if name == "bucket_id_g":
        assert "g" in msg
    # -dumpconf validates the same way
    rc, out, err = run_cli(node_binary, ["-confdir", node.confdir, "-dumpconf"], node.workdir)
    assert rc != 0, "%s: -dumpconf of a bad config must fail" % name


def test_height_limit_depends_on_numbucket(node_factory, node_binary):
    # depth + h ≤ 8: 256 buckets allow h ≤ 6
    node = node_factory(numbucket=256, overrides={"hstore": {"htree": {"tree_height": 7}}}, start=False)
    node.port, node.webport = free_port(), free_port()
    node.write_conf()
    rc, out, err = run_cli(node_binary, ["-confdir", node.confdir, "-dumpconf"], node.workdir)
    assert rc != 0 and "tree_height" in out + err
    node.overrides = {"hstore": {"htree": {"tree_height": 6}}}
    node.write_conf()
    rc, out, err = run_cli(node_binary, ["-confdir", node.confdir, "-dumpconf"], node.workdir)
    assert rc == 0, err


def test_missing_route_and_global(node_factory, node_binary):
    node = node_factory(start=False)
    node.port, node.webport = free_port(), free_port()
    node.write_conf()
    os.unlink(os.path.join(node.confdir, "route.yaml"))
    rc, out, err = run_cli(node_binary, ["-confdir", node.confdir], node.workdir)
    assert rc != 0 and "route" in (out + err).lower()
    node.write_conf()
    os.unlink(os.path.join(node.confdir, "global.yaml"))
    rc, out, err = run_cli(node_binary, ["-confdir", node.confdir], node.workdir)
    assert rc != 0 and "global.yaml" in out + err
    node.write_conf()
    with open(os.path.join(node.confdir, "global.yaml"), "a") as f:
        f.write("\n  bad: [unclosed\n")
    rc, out, err = run_cli(node_binary, ["-confdir", node.confdir], node.workdir)
    assert rc != 0 and "global.yaml" in out + err


# ---------------------------------------------------------------------------------------------
# homes alias, layering
# ---------------------------------------------------------------------------------------------

def test_homes_alias(node_factory, tmp_path):
    alt, other = str(tmp_path / "alt_home"), str(tmp_path / "other_home")

    def use_homes(g, route):
        del g["hstore"]["local"]["home"]
        g["hstore"]["local"]["homes"] = [alt, other]

    node = node_factory(start=False)
    node.conf_hook = use_homes
    node.start()
    assert os.path.realpath(node.http_json("/config")["Home"]) == os.path.realpath(alt)
    with node.raw() as c:
        assert c.set(b"hello", b"world") == b"STORED"
    assert node.stop() == 0
    assert os.path.getsize(os.path.join(alt, "4", "000.data")) == 256
    assert not os.path.exists(os.path.join(other, "4"))
    assert not os.path.exists(os.path.join(node.home, "4", "000.data"))
    assert "homes" in node.log_tail(200).lower(), "more than one homes entry must warn"
    node.start(keep_ports=True)
    with node.raw() as c:
        assert c.get(b"hello") == (0, b"world")
    node.assert_buffers_zero()


def test_global_local_layering(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"check_vhash": True}}, "server": {"threads": 4}},
                        start=False)
    with open(os.path.join(node.confdir, "local.yaml"), "w") as f:
        yaml.safe_dump({"hstore": {"data": {"check_vhash": False}}, "mc": {"body_max_str": "1K"},
                        "server": {"threads": 2}}, f)
    node.start()
    cfg = node.http_json("/config")
    assert cfg["CheckVHash"] is False, "local.yaml false must override global true"
    assert cfg["BodyMax"] == 1024 and cfg["Threads"] == 2
    assert cfg["TimeoutMS"] == 3000, "keys absent from local.yaml keep the global value"
    with node.raw() as c:
        assert c.set(b"key1", b"aaa") == b"STORED"
        assert c.set(b"key1", b"aaa") == b"STORED"
        m = [int(x) for x in c.get(b"??key1")[1].split()]
        assert (m[0], m[6]) == (2, 256), "check_vhash off: the same value is written again: %r" % m
        c.send(b"set big 0 0 1025\r\n" + b"x" * 1025 + b"\r\n")
        assert c.line() == b"CLIENT_ERROR value too large"
        assert c.get(b"key1") == (0, b"aaa")
    node.assert_buffers_zero()


def test_local_zero_overrides(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"flush_interval": 1, "no_gc_days": 3}}}, start=False)
    with open(os.path.join(node.confdir, "local.yaml"), "w") as f:
        f.write("hstore:\n  data:\n    no_gc_days: 0\n")
    node.start()
    cfg = node.http_json("/config")
    assert cfg["NoGCDays"] == 0 and cfg["FlushInterval"] == 1
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# embedded defaults
# ---------------------------------------------------------------------------------------------

def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR like the node's listener: TIME_WAIT leftovers of a previous run don't count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def test_embedded_defaults(node_binary, tmp_path):
    busy = [p for p in (7900, 7903) if not port_free(p)]
    if busy:
        pytest.fail("embedded-defaults test needs ports 7900 and 7903 free; busy: %s" % busy)
    cwd = str(tmp_path / "cwd")
    os.mkdir(cwd)
    rc, out, err = run_cli(node_binary, ["-dumpconf"], cwd)
    assert rc == 0, err
    d = yaml.safe_load(out)
    assert d["server"]["port"] == 7900 and d["server"]["webport"] == 7903
    assert d["hstore"]["local"]["home"] == "./testdb"
    proc = subprocess.Popen([node_binary], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(7900, proc)
        cfg = http_json(7903, "/config")
        assert (cfg["Port"], cfg["WebPort"], cfg["NumBucket"]) == (7900, 7903, 16)
        assert cfg["Buckets"] == [1] * 16
        assert cfg["Listen"] == "0.0.0.0" and cfg["MaxReq"] == 16 and cfg["TimeoutMS"] == 3000
        assert cfg["BodyMax"] == 50 * 1024 * 1024 and cfg["DataFileMax"] == 4194304000
        assert cfg["CheckVHash"] is False and cfg["Fsync"] == "interval" and cfg["TreeHeight"] == 3
        with RawClient(7900) as c:
            for b in range(16):
                k = keys_in_bucket(b, 1, "dflt")[0]
                assert c.set(k, b"v") == b"STORED"
            assert int(c.stats(b"curr_items")["curr_items"]) == 16
    finally:
        rc = stop_proc(proc)
    assert rc == 0
    for b in range(16):
        assert os.path.getsize(os.path.join(cwd, "testdb", "%x" % b, "000.data")) == 256
    assert os.path.exists(os.path.join(cwd, "gobeansdb.log"))


# ---------------------------------------------------------------------------------------------
# -buildhint
# ---------------------------------------------------------------------------------------------

def test_buildhint(node_factory, node_binary):
    node = node_factory()
    keys = keys_in_bucket(4, 20, "bh")
    with node.raw() as c:
        for i, k in enumerate(keys):
            assert c.set(k, b"value%d" % i, flag=i) == b"STORED"
        assert c.delete(keys[0]) == b"DELETED"
    assert node.stop() == 0
    bdir = node.bucket_path(4)
    hints = sorted(f for f in os.listdir(bdir) if f.endswith(".idx.s"))
    assert hints == ["000.000.idx.s"]
    with open(os.path.join(bdir, hints[0]), "rb") as f:
        orig = f.read()
    scan = bf.read_data_file(os.path.join(bdir, "000.data"))
    expect = bf.encode_hint(bf.hint_items_for_records(scan.records), scan.valid_end)

    for target in (bdir, os.path.join(bdir, "000.data")):
        os.unlink(os.path.join(bdir, hints[0]))
        rc, out, err = run_cli(node_binary, ["-confdir", node.confdir, "-buildhint", target], node.workdir)
        assert rc == 0, err
        with open(os.path.join(bdir, hints[0]), "rb") as f:
            rebuilt = f.read()
        assert rebuilt == orig == expect, target
    # a corrupt hint file is replaced when building for the data file
    with open(os.path.join(bdir, hints[0]), "wb") as f:
        f.write(b"\xff" * 50)
    rc, out, err = run_cli(node_binary, ["-confdir", node.confdir, "-buildhint", os.path.join(bdir, "000.data")],
                           node.workdir)
    assert rc == 0, err
    with open(os.path.join(bdir, hints[0]), "rb") as f:
        assert f.read() == expect
