"""beansproxy command line and configuration validation (proxy.md §1.1, §3.2, §6)."""

import os
import subprocess

import pytest
import yaml

import proxyproc

ROUTE = proxyproc.SPREAD_ROUTE_YAML


@pytest.fixture(scope="module")
def binary(proxy_binary):
    return proxy_binary


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    """Working directory of the runs: the default error log `./proxy-error.log` lands here."""
    return str(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def run(binary, cwd):
    def go(*args, timeout=10):
        return subprocess.run([binary, *args], capture_output=True, timeout=timeout, text=True,
                              cwd=cwd)
    return go


def confdir(tmp_path, proxy_yaml, route=ROUTE, name="conf"):
    d = tmp_path / name
    d.mkdir()
    if proxy_yaml is not None:
        (d / "proxy.yaml").write_text(proxy_yaml)
    if route is not None:
        (d / "route.yaml").write_text(route)
    return str(d)


def test_version_and_usage(run):
    r = run("-version")
    assert r.returncode == 0
    assert r.stdout.startswith("beansproxy version v2.1.1-rs.")
    assert run("--version").returncode == 0
    r = run()
    assert r.returncode == 2
    assert "no -confdir given: beansproxy needs DIR/proxy.yaml and DIR/route.yaml" in r.stderr
    r = run("-bogus")
    assert r.returncode == 2


def test_dumpconf_defaults_and_round_trip(run, tmp_path):
    r = run("-dumpconf")
    assert r.returncode == 0, r.stderr
    d = yaml.safe_load(r.stdout)
    assert set(d) == {"proxy", "mc", "dstore", "cassandra"}
    assert d["mc"]["max_req"] == 256
    assert d["dstore"]["read_timeout_ms"] == 2000
    assert d["cassandra"]["max_conn_for_getm"] == 16
    assert d["proxy"]["port"] == 7905 and d["proxy"]["webport"] == 7908
    for key in ("probe_interval_ms", "probe_max_interval_ms", "max_conns_per_host", "scheduler"):
        assert key in d["dstore"]
    for key in ("shadow_read", "dual_write_err_cfg", "prefix_rw_dispatcher_cfg", "password_file"):
        assert key in d["cassandra"]
    # An explicit sample value is honoured; the password never shows.
    conf = confdir(tmp_path, "mc:\n  max_req: 16\ncassandra:\n  password: s3cret\nproxy:\n  zkserves: [x]\n")
    r = run("-confdir", conf, "-dumpconf")
    assert r.returncode == 0, r.stderr
    assert "s3cret" not in r.stdout
    d = yaml.safe_load(r.stdout)
    assert d["mc"]["max_req"] == 16
    assert d["cassandra"]["password"] == "<redacted>"
    assert "unknown key proxy.zkserves" in r.stderr
    # The dump is itself a valid proxy.yaml giving the same dump.
    again = confdir(tmp_path, r.stdout.replace("<redacted>", "x"), name="again")
    r2 = run("--confdir=" + again, "--dumpconf")
    assert r2.returncode == 0, r2.stderr
    assert yaml.safe_load(r2.stdout) == d


CONFIG_CASES = [
    ("dstore:\n  n: three\n", ROUTE, 'config: dstore.n: expected an integer, got "three"'),
    ("dstore:\n  enable: false\n", ROUTE,
     "config: at least one of dstore.enable and cassandra.enable must be true"),
    ("dstore:\n  n: 0\n", ROUTE, "config: dstore.n must be ≥ 1"),
    ("dstore:\n  w: 5\n", ROUTE, "config: dstore.w must be between 1 and dstore.n (3), got 5"),
    ("dstore:\n  r: 4\n", ROUTE, "config: dstore.r must be between 1 and dstore.n (3), got 4"),
    ("proxy:\n  port: 70000\n", ROUTE, "config: proxy.port must be 1-65535"),
    ("proxy:\n  port: 7000\n  webport: 7000\n", ROUTE, "config: proxy.port and proxy.webport must differ"),
    ("dstore:\n  read_timeout_ms: 0\n", ROUTE, "config: dstore.read_timeout_ms must be > 0"),
    ("dstore:\n  connect_timeout_ms: 0\n", ROUTE, "config: dstore.connect_timeout_ms must be > 0"),
    ("mc:\n  timeout_ms: 0\n", ROUTE, "config: mc.timeout_ms must be > 0"),
    ("mc:\n  max_req: 0\n", ROUTE, "config: mc.max_req must be ≥ 1"),
    ("dstore:\n  max_connect_errors: 0\n", ROUTE, "config: dstore.max_connect_errors must be ≥ 1"),
    ("dstore:\n  max_conns_per_host: 4\n", ROUTE,
     "config: dstore.max_conns_per_host must be ≥ max_free_conns_per_host"),
    ("mc:\n  body_max_str: 5X\n", ROUTE, 'config: mc.body_max_str: bad size "5X": expected <int>[K|M|G]'),
    ("dstore:\n  scheduler: fancy\n", ROUTE,
     'config: dstore.scheduler: unknown scheduler "fancy" (expected "" or "buckets_manual")'),
    ("dstore:\n  scheduler: no_buckets_rro\n", ROUTE,
     "scheduler no_buckets_rro is not supported; list every bucket on every host and use n: 1"),
    # route.yaml (§3.2)
    ("", "numbucket: 8\nmain: []\n", "route: numbucket must be 1, 16 or 256 (got 8)"),
    ("", "numbucket: 16\nmain: []\n", "route: no main hosts"),
    ("", "numbucket: 1\nmain:\n- {buckets: [0]}\n", "route: main[0]: addr is required"),
    ("", "numbucket: 1\nmain:\n- {addr: nohost, buckets: [0]}\n",
     'route: main[0]: bad addr "nohost": expected host:port'),
    ("", "numbucket: 1\nmain:\n- {addr: 'h:1', buckets: [0]}\nbackup: ['h:0']\n",
     'route: backup[0]: bad addr "h:0": expected host:port'),
    ("dstore:\n  n: 1\n  w: 1\n", "numbucket: 1\nmain:\n- {addr: 'h:1', buckets: [0]}\n- {addr: 'h:1', buckets: [0]}\n",
     "route: main[1]: duplicate addr h:1 (also main[0])"),
    ("dstore:\n  n: 1\n  w: 1\n", "numbucket: 1\nmain:\n- {addr: 'h:1', buckets: [0]}\nbackup: ['h:2', 'h:2']\n",
     "route: backup[1]: h:2 is already listed (backup[0])"),
    ("dstore:\n  n: 1\n  w: 1\n", "numbucket: 1\nmain:\n- {addr: 'h:1', buckets: [0]}\nbackup: ['h:1']\n",
     "route: backup[0]: h:1 is already listed (main[0])"),
    ("", "numbucket: 16\nmain:\n- {addr: 'h:1', buckets: [0, g]}\n",
     'route: main[0] (h:1): bad bucket "g": not a hex number'),
    ("", "numbucket: 16\nmain:\n- {addr: 'h:1', buckets: [10]}\n",
     "route: main[0] (h:1): bucket 10 out of range for numbucket 16"),
    ("dstore:\n  n: 1\n  w: 1\n", "numbucket: 16\nmain:\n- {addr: 'h:1', buckets: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b, c, d, e, f, a]}\n",
     "route: main[0] (h:1): bucket a listed twice"),
    ("dstore:\n  n: 1\n  w: 1\n", "numbucket: 16\nmain:\n- {addr: 'h:1', buckets: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b, c, d, e]}\n",
     "route: bucket f has no main host"),
    ("dstore:\n  n: 4\n", ROUTE, "route: bucket 0 has 3 main hosts but dstore.n is 4"),
]


@pytest.mark.parametrize("proxy_yaml,route,message", CONFIG_CASES)
def test_bad_config_exits_2_with_message(run, tmp_path, proxy_yaml, route, message):
    conf = confdir(tmp_path, proxy_yaml, route)
    r = run("-confdir", conf)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr


def test_unreadable_and_invalid_files(run, tmp_path):
    conf = confdir(tmp_path, None)
    r = run("-confdir", conf)
    assert r.returncode == 2
    assert "config: cannot read %s" % os.path.join(conf, "proxy.yaml") in r.stderr
    conf = confdir(tmp_path, "proxy: [\n", name="bad")
    r = run("-confdir", conf)
    assert r.returncode == 2
    assert "config: %s: invalid YAML at line " % os.path.join(conf, "proxy.yaml") in r.stderr
    conf = confdir(tmp_path, "", None, name="noroute")
    r = run("-confdir", conf)
    assert r.returncode == 2
    assert "route: cannot read %s" % os.path.join(conf, "route.yaml") in r.stderr


def test_config_error_goes_to_the_error_log(run, tmp_path):
    log = tmp_path / "err.log"
    conf = confdir(tmp_path, "proxy:\n  errorlog: %s\ndstore:\n  n: 0\n" % log)
    r = run("-confdir", conf)
    assert r.returncode == 2
    text = log.read_text()
    assert "FATAL" in text and "config: dstore.n must be ≥ 1" in text


def test_starts_without_reachable_backends_and_stops_cleanly(binary, tmp_path):
    """Config-only check of a full start: the backends of ROUTE are not running."""
    p = proxyproc.Proxy(binary, str(tmp_path / "p"), yaml.safe_load(ROUTE))
    p.start()
    with p.raw() as c:
        assert c.cmd(b"get nokey") == b"SERVER_ERROR read failed"
        assert c.set(b"nokey", b"v") == b"SERVER_ERROR write failed"
    hosts = p.hosts()
    assert len(hosts) == 6 and not all(h["up"] for h in hosts.values())
    p.assert_buffers_zero()
    assert p.stop() == 0
