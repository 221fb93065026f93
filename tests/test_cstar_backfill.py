"""`beansctl backfill` then `beansctl verify` (cassandra.md §9, §11 "Backfill then verify" and
"Live write wins"), scaled down: ~1000 keys with 1 MiB values and deletes written in brw, the
prefix switched to brw_cw, backfilled, verified; a run interrupted and resumed from its
checkpoint; live writes during `--debug-delay-write-ms` win over the older backfilled record."""

import json
import os
import random
import signal
import subprocess
import time

import pytest

import beansfmt
import cstar
import proxyproc
from cstar import BRW, BRW_CW, BW_CRW, beansctl, cfg_ok, set_status, wait_until


@pytest.fixture(scope="module")
def cc(cstar_cluster_factory, ctl_binary):
    # Node access logs show when backfill has fetched a record (`get @@<khash>`).
    return cstar_cluster_factory(
        cassandra={"write_timeout_ms": 5000, "timeout_ms": 5000},
        node_overrides=lambda n: {"server": {"accesslog": os.path.join(n.workdir, "access.log")}})


@pytest.fixture
def cl(cc):
    cc.proxy.wait_hosts_up()
    yield cc
    cc.proxy.assert_buffers_zero(timeout=5.0)


def write_dataset(cl, prefix, n, n_big, n_del, seed):
    """n keys under prefix through the proxy (status brw), n_big of them 1 MiB, then n_del of
    them deleted. Returns (live {key: (flag, value)}, deleted [keys])."""
    rnd = random.Random(seed)
    keys = [("%s%05d" % (prefix, i)).encode() for i in range(n)]
    data = {}
    for i, k in enumerate(keys):
        if i < n_big:
            v = bytes([65 + i]) * (1 << 20)
        else:
            v = b"v%d-" % i + os.urandom(rnd.randint(1, 200)).hex().encode()
        data[k] = (rnd.choice([0, 0, 1, 17, 0x80000000]), v)
    with cl.proxy.raw(timeout=60) as c:
        replies = cstar.pipeline_sets(c, [(k, v, f) for k, (f, v) in data.items()], batch=50)
        assert replies == [b"STORED"] * n
        deleted = rnd.sample(keys[n_big:], n_del)
        assert cstar.pipeline_cmds(c, [b"delete " + k for k in deleted]) == [b"DELETED"] * n_del
    for k in deleted:
        del data[k]
    cl.proxy.assert_buffers_zero(timeout=10.0)       # background replica writes finished
    return data, deleted


def source_meta(cl, key):
    """`?key` on the node backfill reads: the bucket's first main in route order."""
    src = cl.bucket_mains(proxyproc.bucket_of(key))[0]
    with src.raw() as c:
        return cstar.meta_fields(c, key)


def bucket_states(doc):
    """{bucket int: state} of a checkpoint; ids may be written in decimal or hex."""
    ids = list(doc["buckets"])
    base = 16 if any(c in "abcdef" for b in ids for c in b.lower()) else 10
    return {int(b, base): st for b, st in doc["buckets"].items()}


def checkpoint_path(d, prefixes):
    h = proxyproc.fnv1a64(b"\x00".join(sorted(p.encode() for p in prefixes)))
    return os.path.join(d, "backfill-%016x.json" % h)


def backfill_args(cl, prefix, ckdir, *extra):
    return ["backfill", *cl.ctl_common(), "--prefix", prefix, "--checkpoint", ckdir, "--json", *extra]


def verify(cl, prefix):
    return beansctl("verify", *cl.ctl_common(), "--prefix", prefix, "--json")


def assert_clean(v, checked):
    assert v.rc == 0 and v.json, v
    for cat in ("value_diff", "flag_diff", "missing_in_cstar", "extra_in_cstar", "errors"):
        assert v.json[cat] == 0, (cat, v)
    assert v.json["checked"] == checked and v.json["equal"] + v.json["transient"] == checked, v


def test_backfill_then_verify(cl, tmp_path):
    prefix = "/bf/"
    live, deleted = write_dataset(cl, prefix, 1000, 3, 50, seed=1)
    set_status(cl.proxy, prefix, BRW_CW)
    assert cl.cs.keys(cl.ks, "kvstore", prefix.encode()) == [], "brw wrote nothing to C*"

    ck = str(tmp_path / "ck")
    r = beansctl(*backfill_args(cl, prefix, ck, "--rate", "100000"))
    assert r.rc == 0 and r.json, r
    s = r.json
    assert s["buckets_done"] == 16 and s["errors"] == 0 and s["failures"] == [], r
    assert s["written"] == len(live) and s["deleted"] == len(deleted), r
    assert s["matched"] == s["written"] + s["deleted"] == 1000, r
    assert s["skipped_status"] == 0 and s["invalid_key"] == 0 and s["scanned"] >= s["matched"], r

    assert_clean(verify(cl, prefix), len(live) + len(deleted))
    assert cl.cs.keys(cl.ks, "kvstore", prefix.encode()) == sorted(live)
    for k in deleted:
        assert cl.row(k) is None, k
    sample = sorted(live)[:3] + random.Random(2).sample(sorted(live), 20)
    for k in sample:
        row, (flag, value), meta = cl.row(k), live[k], source_meta(cl, k)
        assert row.body == value and row.flag == flag, (k, row)
        assert row.rtime_ms == meta[4] * 1000 and row.exptime == 0 and row.cas == 0, (k, row, meta)
        assert row.writetime == meta[4] * 1_000_000, (k, row, meta)

    # Checkpoint: every bucket done; a rerun needs --resume or --restart.
    path = checkpoint_path(ck, [prefix])
    with open(path) as f:
        doc = json.load(f)
    assert doc["version"] == 1 and doc["prefixes"] == [prefix] and doc["numbucket"] == 16
    assert bucket_states(doc) == {b: "done" for b in range(16)}
    r = beansctl(*backfill_args(cl, prefix, ck))
    assert r.rc == 2 and "exists; pass --resume or --restart" in r.stderr, r
    assert os.path.basename(path) in r.stderr, r
    # Re-running is harmless.
    r = beansctl(*backfill_args(cl, prefix, ck, "--restart", "--rate", "100000"))
    assert r.rc == 0 and r.json["errors"] == 0, r
    assert_clean(verify(cl, prefix), len(live) + len(deleted))
    cfg_ok(cl.proxy, "DELETE", "rwswitcher", {"prefix": prefix})


def test_interrupted_backfill_resumes_without_redoing_done_buckets(cl, tmp_path):
    prefix = "/bfr/"
    live, deleted = write_dataset(cl, prefix, 600, 0, 10, seed=3)
    set_status(cl.proxy, prefix, BRW_CW)
    ck = str(tmp_path / "ck")
    binary = cstar.find_ctl_binary()
    proc = subprocess.Popen([binary, *backfill_args(cl, prefix, ck, "--rate", "100")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(cl.cs.keys(cl.ks, "kvstore", prefix.encode())) >= 200 or proc.poll() is not None,
                   60, interval=0.2, what="backfill progress")
        assert proc.poll() is None, "backfill finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    with open(checkpoint_path(ck, [prefix])) as f:
        doc = json.load(f)
    assert doc["numbucket"] == 16 and doc["prefixes"] == [prefix]
    done = sorted(b for b, st in bucket_states(doc).items() if st == "done")
    assert done and len(done) < 16, doc

    # Remove, behind backfill's back, one row of a done bucket: a resume must not redo it.
    victim = next(k for k in sorted(live) if proxyproc.bucket_of(k) in done)
    cl.delete(victim, ts_us=cl.row(victim).writetime + 1)
    r = beansctl(*backfill_args(cl, prefix, ck, "--resume", "--rate", "100000"))
    assert r.rc == 0 and r.json and r.json["errors"] == 0, r
    assert r.json["buckets_done"] == 16, r
    assert cl.row(victim) is None, "a done bucket was backfilled again"
    rows = set(cl.cs.keys(cl.ks, "kvstore", prefix.encode()))
    assert rows == set(live) - {victim}
    for k in deleted:
        assert cl.row(k) is None
    v = verify(cl, prefix)
    assert v.rc == 1 and v.json["missing_in_cstar"] == 1 and v.json["samples"]["missing_in_cstar"] == [victim.decode()], v
    # A live write through the proxy repairs it.
    flag, value = live[victim]
    with cl.proxy.raw() as c:
        assert c.set(victim, value, flag) == b"STORED"
    assert_clean(verify(cl, prefix), len(live) + len(deleted))
    cfg_ok(cl.proxy, "DELETE", "rwswitcher", {"prefix": prefix})


def fetched(cl, key):
    """True once some node logged the `get @@<khash>` of `key` (backfill fetched the record)."""
    token = ("@@%016x" % beansfmt.keyhash(key)).lower()
    for n in cl.nodes:
        if token in cstar.file_text(os.path.join(n.workdir, "access.log")).lower():
            return True
    return False


def test_live_write_wins_over_delayed_backfill(cl, tmp_path):
    prefix = "/bflive/"
    ks, kd, kq = b"/bflive/set", b"/bflive/del", b"/bflive/quiet"
    with cl.proxy.raw() as c:
        for k in (ks, kd, kq):
            assert c.set(k, b"A-" + k) == b"STORED"
    cl.proxy.assert_buffers_zero(timeout=10.0)
    set_status(cl.proxy, prefix, BRW_CW)
    ck = str(tmp_path / "ck")
    binary = cstar.find_ctl_binary()
    proc = subprocess.Popen([binary, *backfill_args(cl, prefix, ck, "--debug-delay-write-ms", "2000",
                                                    "--rate", "100000")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acted = {}
    try:
        def step():
            with cl.proxy.raw() as c:
                if ks not in acted and fetched(cl, ks):
                    assert cl.row(ks) is None, "backfill wrote before its delay"
                    assert c.set(ks, b"B-live") == b"STORED"
                    acted[ks] = time.time()
                if kd not in acted and fetched(cl, kd):
                    assert cl.row(kd) is None, "backfill wrote before its delay"
                    assert c.delete(kd) == b"DELETED"
                    acted[kd] = time.time()
            return len(acted) == 2 or proc.poll() is not None
        wait_until(step, 60, interval=0.02, what="backfill fetching both keys")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert set(acted) == {ks, kd}, ("backfill ended before the live writes", out, err[-2000:])
    assert proc.returncode == 0, (out, err[-2000:])
    summary = json.loads(out)
    assert summary["written"] == 3 and summary["errors"] == 0, summary
    row = cl.row(ks)
    assert row is not None and row.body == b"B-live", row
    assert cl.row(kd) is None
    assert cl.row(kq).body == b"A-" + kq
    set_status(cl.proxy, prefix, BW_CRW)
    with cl.proxy.raw() as c:
        assert c.get(ks) == (0, b"B-live")
        assert c.get(kd) is None
        assert c.get(kq) == (0, b"A-" + kq)
    assert_clean(verify(cl, prefix), 3)
    set_status(cl.proxy, prefix, BRW)
    cfg_ok(cl.proxy, "DELETE", "rwswitcher", {"prefix": prefix})


def test_backfill_usage_errors(cl, tmp_path):
    # --resume and --restart together, and a missing --prefix: usage errors (exit 2).
    ck = str(tmp_path / "ck")
    r = beansctl(*backfill_args(cl, "/bfu/", ck, "--resume", "--restart"))
    assert r.rc == 2, r
    r = beansctl("backfill", *cl.ctl_common(), "--checkpoint", ck, "--json")
    assert r.rc == 2, r
    # Cassandra unreachable: exit 3.
    port = proxyproc.free_port()
    r = beansctl("backfill", "--route", cl.proxy.route_path, "--cassandra", "127.0.0.1:%d" % port,
                 "--prefix", "/bfu/", "--keyspace", cl.ks, "--checkpoint", ck, "--json", timeout=120)
    assert r.rc == 3, r
