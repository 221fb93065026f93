"""The `cassandra:` section of proxy.yaml (cassandra.md §3, §4.2, §11 "getm errors and config"):
one startup check per row of §3.2 (exit code and message on stderr), password_file
authentication, and the password never shown: /config/, -dumpconf, error log, access log,
dual-write log and error replies, also when authentication fails."""

import copy
import json
import os
import subprocess

import pytest
import yaml

import cstar as harness
import nodeproc
import proxyproc
from cstar import BRW_CW, CR, CRW, wait_until

ROUTE = proxyproc.SPREAD_ROUTE_YAML
VALID = "valid: br1w1cr0w0, br1w1cr0w1, br0w1cr1w1, br0w0cr1w1, br0w0cr1w0"
SECRET_ROLE, SECRET = "beans_secret_role", "S3cr3t-beans-pw"
WRONG = "Wr0ng-beans-pw-Q7"


@pytest.fixture(scope="module")
def proxy_bin(proxy_binary):
    return proxy_binary


@pytest.fixture(scope="module")
def secret_role(cstar):
    cstar.ensure_role(SECRET_ROLE, SECRET)
    return SECRET_ROLE


class Runner:
    def __init__(self, cs, ks, binary, tmp_path):
        self.cs, self.ks, self.binary, self.tmp = cs, ks, binary, tmp_path
        self.n = 0

    def conf(self, cassandra=None, mutate=None, dstore=True):
        self.n += 1
        work = self.tmp / ("run%d" % self.n)
        (work / "conf").mkdir(parents=True)
        conf = proxyproc.default_proxy_yaml(nodeproc.free_port(), nodeproc.free_port(), str(work))
        conf["cassandra"] = harness.cassandra_section(self.cs, self.ks, str(work / "cstar"), extra=cassandra)
        conf["dstore"]["enable"] = dstore
        if mutate:
            mutate(conf["cassandra"])
        with open(work / "conf" / "proxy.yaml", "w") as f:
            yaml.safe_dump(conf, f, default_flow_style=False, sort_keys=False)
        (work / "conf" / "route.yaml").write_text(ROUTE)
        return str(work), conf

    def run(self, *args, cassandra=None, mutate=None, timeout=30, dstore=True):
        """Start beansproxy and expect it to exit by itself; (returncode, stdout, stderr, conf)."""
        work, conf = self.conf(cassandra, mutate, dstore)
        proc = subprocess.Popen([self.binary, "-confdir", os.path.join(work, "conf"), *args], cwd=work,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError("beansproxy kept running instead of refusing the config\n%s" % err[-2000:])
        return proc.returncode, out, err, conf


@pytest.fixture
def runner(cstar, cstar_keyspace, proxy_bin, tmp_path):
    return Runner(cstar, cstar_keyspace, proxy_bin, tmp_path)


def setk(path, value):
    """mutate(sec): set a dotted path inside the cassandra section."""
    def m(sec):
        d = sec
        parts = path.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value
    return m


def delk(path):
    def m(sec):
        d = sec
        parts = path.split(".")
        for p in parts[:-1]:
            d = d[p]
        d.pop(parts[-1], None)
    return m


RW, TF = "prefix_rw_dispatcher_cfg", "prefix_table_dispatcher_cfg"
CASES = [
    ("hosts_empty", setk("hosts", []), ["config: cassandra.hosts is empty"]),
    ("hosts_bad", lambda s: s["hosts"].append("127.0.0.1:abc"),
     ['config: cassandra.hosts[1]: bad address "127.0.0.1:abc"']),
    ("keyspace_missing", delk("default_key_space"), ["config: cassandra.default_key_space is required"]),
    ("table_missing", delk("default_table"), ["config: cassandra.default_table is required"]),
    ("table_bad", setk("default_table", "bad-name"),
     ['config: cassandra.default_table: bad name "bad-name" (letters, digits, _; max 48)']),
    ("table_too_long", setk("default_table", "t" * 49),
     ['config: cassandra.default_table: bad name "%s" (letters, digits, _; max 48)' % ("t" * 49)]),
    ("keyspace_bad", setk("default_key_space", "9ks"),
     ['config: cassandra.default_key_space: bad name "9ks" (letters, digits, _; max 48)']),
    ("storage_missing", delk("default_storage"), ["config: cassandra.default_storage is required"]),
    ("storage_unknown", setk("default_storage", "brw"),
     ["config: cassandra.default_storage", 'unknown status "brw" (%s)' % VALID]),
    ("consistency", setk("consistency", "sometimes"),
     ['config: cassandra.consistency: unknown value "sometimes" (valid: one, two, three, quorum, all, '
      'local_quorum, each_quorum, local_one)']),
    ("max_conn_for_getm", setk("max_conn_for_getm", 0), ["config: cassandra.max_conn_for_getm must be ≥ 1"]),
    ("timeout_ms", setk("timeout_ms", 0), ["config: cassandra.timeout_ms must be > 0"]),
    ("write_timeout_ms", setk("write_timeout_ms", 0), ["config: cassandra.write_timeout_ms must be > 0"]),
    ("connect_timeout_ms", setk("connect_timeout_ms", 0), ["config: cassandra.connect_timeout_ms must be > 0"]),
    ("num_conns", setk("num_conns", 0), ["config: cassandra.num_conns must be ≥ 1"]),
    ("ratio_high", setk("shadow_read.ratio", 1.5), ["config: cassandra.shadow_read.ratio must be between 0 and 1"]),
    ("ratio_negative", setk("shadow_read.ratio", -0.1),
     ["config: cassandra.shadow_read.ratio must be between 0 and 1"]),
    ("rw_cfg_table_alone", delk(RW + ".cfg_keyspace"),
     ["config: cassandra.prefix_rw_dispatcher_cfg: cfg_table and cfg_keyspace must be set together"]),
    ("rw_unknown_status", setk(RW + ".static", {"bogus": ["/p/"]}),
     ['config: cassandra.prefix_rw_dispatcher_cfg: unknown status "bogus" for prefix "/p/" (%s)' % VALID]),
    ("rw_empty_prefix", setk(RW + ".static", {BRW_CW: [""]}),
     ["config: cassandra.prefix_rw_dispatcher_cfg: empty prefix is not allowed"]),
    ("rw_twice_in_static", setk(RW + ".static", {BRW_CW: ["/p2/"], CRW: ["/p2/"]}),
     ["config: cassandra.prefix_rw_dispatcher_cfg: ", 'prefix "/p2/" configured twice']),
    ("tf_cfg_table_alone", setk(TF + ".cfg_table", "bdb_prefix_table_finder"),
     ["config: cassandra.prefix_table_dispatcher_cfg: cfg_table and cfg_keyspace must be set together"]),
    ("tf_bad_table", setk(TF + ".static", {"bad-t": ["/t/"]}),
     ["config: cassandra.prefix_table_dispatcher_cfg", "bad-t"]),
    ("tf_empty_prefix", setk(TF + ".static", {"kvstore_ark": [""]}),
     ["config: cassandra.prefix_table_dispatcher_cfg: empty prefix is not allowed"]),
    ("tf_twice_in_static", setk(TF + ".static", {"kvstore_ark": ["/t2/"], "kvstore": ["/t2/"]}),
     ["config: cassandra.prefix_table_dispatcher_cfg: ", 'prefix "/t2/" configured twice']),
]


@pytest.mark.parametrize("name,mutate,messages", CASES, ids=[c[0] for c in CASES])
def test_bad_cassandra_config_exits_2(runner, name, mutate, messages):
    rc, _, err, _ = runner.run(mutate=mutate)
    assert rc == 2, (rc, err[-2000:])
    for m in messages:
        assert m in err, (m, err[-2000:])


def test_missing_password_file_and_dump_dir(runner, tmp_path):
    missing = str(tmp_path / "no-such.pass")
    rc, _, err, _ = runner.run(mutate=setk("password_file", missing))
    assert rc == 2 and "config: cassandra.password_file: cannot read %s: " % missing in err, err[-2000:]
    nodir = str(tmp_path / "no-such-dir")
    rc, _, err, _ = runner.run(mutate=setk("dual_write_err_cfg.dump_to_dir", nodir))
    assert rc == 2, err[-2000:]
    assert 'config: cassandra.dual_write_err_cfg.dump_to_dir: "%s" is not an existing directory' % nodir in err
    afile = tmp_path / "a-file"
    afile.write_text("x")
    rc, _, err, _ = runner.run(mutate=setk("dual_write_err_cfg.dump_to_dir", str(afile)))
    assert rc == 2, err[-2000:]
    assert 'config: cassandra.dual_write_err_cfg.dump_to_dir: "%s" is not an existing directory' % afile in err


def test_prefix_in_static_and_table_exits_2(runner, cstar, cstar_keyspace):
    ks = cstar_keyspace
    cstar.put_cfg_row(ks, "/dup/", CRW)
    cstar.put_cfg_row(ks, "/tdup/", "kvstore", table="bdb_prefix_table_finder")
    try:
        rc, _, err, _ = runner.run(mutate=setk(RW + ".static", {BRW_CW: ["/dup/"]}))
        assert rc == 2, err[-2000:]
        assert ('config: cassandra.prefix_rw_dispatcher_cfg: prefix "/dup/" configured twice '
                '(static: %s; table %s.bdb_prefix_rw_switcher: %s)' % (BRW_CW, ks, CRW)) in err, err[-2000:]

        def tf(sec):
            sec[TF].update({"cfg_table": "bdb_prefix_table_finder", "cfg_keyspace": ks,
                            "static": {"kvstore_ark": ["/tdup/"]}})
        rc, _, err, _ = runner.run(mutate=tf)
        assert rc == 2, err[-2000:]
        assert ('config: cassandra.prefix_table_dispatcher_cfg: prefix "/tdup/" configured twice '
                '(static: kvstore_ark; table %s.bdb_prefix_table_finder: kvstore)' % ks) in err, err[-2000:]
    finally:
        cstar.delete_cfg_row(ks, "/dup/")
        cstar.delete_cfg_row(ks, "/tdup/", table="bdb_prefix_table_finder")


def test_table_that_cannot_be_prepared(runner, cstar_keyspace):
    rc, _, err, _ = runner.run(mutate=setk(TF + ".static", {"nosuch_tbl": ["/np/"]}))
    assert rc != 0, err[-2000:]
    assert "cassandra: table %s.nosuch_tbl: " % cstar_keyspace in err, err[-2000:]


def test_cassandra_unreachable_exits_1(runner):
    port = nodeproc.free_port()
    rc, _, err, _ = runner.run(mutate=lambda s: s.update(hosts=["127.0.0.1:%d" % port], connect_timeout_ms=1000))
    assert rc == 1, (rc, err[-2000:])
    assert "cassandra: cannot connect to [127.0.0.1:%d]: " % port in err, err[-2000:]


def test_disabled_section_is_not_validated(runner):
    # enable: false → nothing of the section is checked; the proxy starts (beansdb only).
    work, conf = runner.conf(cassandra={"enable": False, "hosts": [], "consistency": "bogus",
                                        "default_storage": "nonsense"})
    p = proxyproc.Proxy(runner.binary, work, yaml.safe_load(ROUTE))
    p.overrides = {k: v for k, v in conf.items() if k != "proxy"}
    try:
        p.start(timeout=30)
        assert p.running()
    finally:
        p.stop()


# ----- dstore disabled


def test_dstore_disabled_forces_cstar_statuses(runner, cstar, cstar_keyspace):
    static = {BRW_CW: ["/nd/"], CR: ["/ndcr/"]}
    work, conf = runner.conf(cassandra={"default_storage": CRW, RW: {"static": static}}, dstore=False)
    p = proxyproc.Proxy(runner.binary, work, yaml.safe_load(ROUTE))
    p.overrides = {k: v for k, v in conf.items() if k != "proxy"}
    p.start(timeout=60)
    try:
        logs = harness.file_text(os.path.join(work, "proxy.stderr")) + harness.file_text(p.errorlog)
        assert ('prefix "/nd/": status %s needs beansdb but dstore is disabled; using %s' % (BRW_CW, CRW)) in logs
        assert 'prefix "/ndcr/": status' not in logs, "cr needs no beansdb and stays cr"
        with p.raw() as c:
            assert c.set(b"/nd/k", b"to-cstar") == b"STORED"
            assert c.get(b"/nd/k") == (0, b"to-cstar")
            assert c.set(b"/ndcr/k", b"v") == b"NOT_STORED"
            assert c.retrieve(b"get @") == [], "@ keys answer END without beansdb"
        assert cstar.read_row(cstar_keyspace, "kvstore", b"/nd/k").body == b"to-cstar"
        p.assert_buffers_zero()
    finally:
        p.stop()


# ----- credentials


def test_password_file_authenticates_as_doubandb_test(runner, cstar, cstar_keyspace, tmp_path):
    pw = tmp_path / "crlf.pass"
    pw.write_bytes(b"doubandb_test\r\n")
    work, conf = runner.conf(cassandra={"password_file": str(pw), "default_storage": CRW}, dstore=False)
    p = proxyproc.Proxy(runner.binary, work, yaml.safe_load(ROUTE))
    p.overrides = {k: v for k, v in conf.items() if k != "proxy"}
    p.start(timeout=60)
    try:
        with p.raw() as c:
            assert c.set(b"/pwf/k", b"v") == b"STORED"
            assert c.get(b"/pwf/k") == (0, b"v")
        assert "doubandb_test" in cstar.client_usernames()
        assert cstar.read_row(cstar_keyspace, "kvstore", b"/pwf/k").body == b"v"
        p.assert_buffers_zero()
    finally:
        p.stop()


def leaks(*texts):
    return [t for t in (SECRET, WRONG) if any(t in x for x in texts)]


def dumpconf(binary, confdir):
    r = subprocess.run([binary, "-confdir", confdir, "-dumpconf"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("mode", ["inline", "file_wins"])
def test_password_never_shown(cstar_cluster_factory, cstar, cstar_pause, secret_role, proxy_bin, tmp_path, mode):
    pwfile = tmp_path / "secret.pass"
    pwfile.write_text(SECRET + "\n")
    if mode == "inline":
        creds = {"username": secret_role, "password": SECRET, "password_file": ""}
    else:
        creds = {"username": secret_role, "password": WRONG, "password_file": str(pwfile)}
    cc = cstar_cluster_factory(
        static={BRW_CW: ["/pw_cw/"], CRW: ["/pw_c/"]},
        cassandra=dict(creds, timeout_ms=300, write_timeout_ms=300, retry_num=0),
        overrides={"mc": {"timeout_ms": 5000}})
    p = cc.proxy
    assert secret_role in cstar.client_usernames(), "the proxy logs in as the configured role"
    status, body = p.http("/config/")
    assert status == 200 and not leaks(body.decode()), body
    doc = json.loads(body)
    assert doc["cassandra"]["password"] == "<redacted>"
    assert doc["cassandra"]["password_file"] == creds["password_file"]
    d = dumpconf(proxy_bin, p.confdir)
    assert not leaks(d.stdout, d.stderr)
    assert yaml.safe_load(d.stdout)["cassandra"]["password"] == "<redacted>"
    replies = []
    with p.raw(timeout=30) as c:
        replies.append(c.set(b"/pw_cw/a", b"v"))
        replies.append(c.set(b"/pw_c/a", b"v"))
        with cstar_pause():
            replies.append(c.set(b"/pw_cw/b", b"v"))        # logged dual-write failure
            replies.append(c.set(b"/pw_c/b", b"v"))         # SERVER_ERROR cstar: …
            c.send(b"get /pw_c/a /pw_cw/a\r\n")
            replies.append(c.line())
    assert replies[:3] == [b"STORED"] * 3, replies
    assert replies[3].startswith(b"SERVER_ERROR cstar: ") and replies[4].startswith(b"SERVER_ERROR"), replies
    cc.wait_cstar_ok(key=b"/pw_c/a")
    assert len(harness.read_lines(cc.dual_log)) == 1
    texts = [b.decode("latin-1") for b in replies] + [
        harness.file_text(cc.dual_log), harness.file_text(p.errorlog), harness.file_text(p.accesslog),
        harness.file_text(os.path.join(p.workdir, "proxy.stderr")),
        harness.file_text(os.path.join(p.workdir, "proxy.stdout"))]
    assert not leaks(*texts)
    p.assert_buffers_zero(timeout=5.0)
    cc.stop()
    wait_until(lambda: secret_role not in cstar.client_usernames(), 15, what="connections closed")


@pytest.mark.parametrize("mode", ["file", "inline"])
def test_wrong_password_fails_without_leaking(runner, secret_role, mode):
    creds = {"username": secret_role, "connect_timeout_ms": 3000}
    if mode == "file":
        def mutate(sec):
            with open(sec["password_file"], "w") as f:
                f.write(WRONG + "\n")
    else:
        creds.update(password=WRONG, password_file="")
        mutate = None
    rc, out, err, conf = runner.run(cassandra=copy.deepcopy(creds), mutate=mutate, timeout=60)
    assert rc == 1, (rc, err[-2000:])
    assert "cassandra: cannot connect to [" in err, err[-2000:]
    errlog = harness.file_text(conf["proxy"]["errorlog"])
    assert not leaks(out, err, errlog), (out, err)
