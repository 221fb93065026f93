"""Routes with 2, 3 and 4 mains per bucket and 0, 1, 2 backups (proxy.md §3.4, §8)."""

import time

import pytest

import nodeproc
import proxyproc
from proxyproc import Cluster, bucket_of


def start_cluster(tmp_path, nmains, per_bucket, nbackups, n, w):
    node_bin, proxy_bin = nodeproc.find_binary(), proxyproc.find_proxy_binary()
    if node_bin is None or proxy_bin is None:
        pytest.fail("binaries missing: build with `cargo build -p beansdb-node -p beansdb-proxy`")
    c = Cluster(node_bin, proxy_bin, str(tmp_path), nmains=nmains, nbackups=nbackups,
                per_bucket=per_bucket, proxy_overrides={"dstore": {"n": n, "w": w, "r": 1}})
    return c.start()


def wait_holders(c, key, want, timeout=3.0):
    want = sorted(c.addr(x) for x in want)
    deadline = time.time() + timeout
    while True:
        got = sorted(c.addr(x) for x in c.holders(key))
        if got == want or time.time() > deadline:
            return got, want
        time.sleep(0.05)


@pytest.mark.parametrize("nmains,per_bucket,nbackups,n,w", [
    (2, 2, 0, 2, 1),
    (3, 3, 1, 3, 2),
    (5, 4, 2, 3, 2),
])
def test_routes_start_and_place_on_the_replicas(tmp_path, nmains, per_bucket, nbackups, n, w):
    c = start_cluster(tmp_path, nmains, per_bucket, nbackups, n, w)
    try:
        keys = []
        for b in range(16):
            keys += c.keys_in_bucket(b, 2, prefix="r%d:" % b)
        with c.proxy.raw() as cl:
            for k in keys:
                assert cl.set(k, k) == b"STORED"
        for k in keys:
            reps = c.replicas(k, n)
            assert len(reps) == n
            assert all(x in c.bucket_mains(bucket_of(k)) for x in reps)
            got, want = wait_holders(c, k, reps)
            assert got == want, k
        with c.proxy.raw() as cl:
            got = cl.retrieve(b"get " + b" ".join(keys))
            assert [g[0] for g in got] == keys
        c.proxy.assert_buffers_zero()
    finally:
        c.stop()


def test_two_backups_both_take_a_write_when_mains_are_short(tmp_path):
    c = start_cluster(tmp_path, 5, 4, 2, 3, 2)
    try:
        key = c.keys_in_bucket(5, 1, prefix="short:")[0]
        reps = c.replicas(key, 3)
        for x in reps[:2]:
            x.stop()
        with c.proxy.raw() as cl:
            assert cl.set(key, b"v") == b"STORED"
            got, want = wait_holders(c, key, [reps[2]] + c.backups)
            assert got == want
            assert cl.get(key) == (0, b"v")
        c.proxy.assert_buffers_zero()
    finally:
        c.stop()
