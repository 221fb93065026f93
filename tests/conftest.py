"""pytest fixtures shared by the Python test suite.

`node_factory(**kw)` starts a `beansdb` node (see nodeproc.Node for the keyword arguments:
home, numbucket, buckets, overrides = nested dict merged into global.yaml, env = extra environment
variables such as BEANSDB_TEST_HOOKS) and stops every node
it started at teardown. The binary is $BEANSDB_BIN or <repo>/target/debug/beansdb; if it is
missing the node tests FAIL (build it with `cargo build -p beansdb-node`), because CI must not
silently skip them. Format-only tests (test_beansfmt.py) never need the binary.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nodeproc  # noqa: E402
import proxyproc  # noqa: E402


@pytest.fixture(scope="session")
def node_binary():
    path = nodeproc.find_binary()
    if path is None:
        pytest.fail("beansdb binary not found (set BEANSDB_BIN or build %s)"
                    % os.path.join("target", "debug", "beansdb"))
    return path


@pytest.fixture
def node_factory(node_binary, tmp_path):
    nodes = []
    counter = [0]

    def start(home=None, numbucket=16, buckets=None, overrides=None, route_extra=None,
              timeout=60.0, start=True, env=None):
        counter[0] += 1
        workdir = tmp_path / ("node%d" % counter[0])
        workdir.mkdir()
        node = nodeproc.Node(node_binary, str(workdir), home=home, numbucket=numbucket,
                             buckets=buckets, overrides=overrides, route_extra=route_extra,
                             env=env)
        nodes.append(node)
        if start:
            node.start(timeout)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture(scope="session")
def proxy_binary():
    """The beansproxy binary; missing is a failure, never a skip."""
    b = proxyproc.find_proxy_binary()
    if b is None:
        pytest.fail("beansproxy binary missing: cargo build -p beansdb-proxy")
    return b


@pytest.fixture(scope="session")
def shared_fixture():
    """The real gobeansdb 2.1 home; missing is a failure, never a skip."""
    path = nodeproc.SHARED_FIXTURE
    if not os.path.isfile(os.path.join(path, "expected.json")):
        pytest.fail("shared gobeansdb fixture missing: %s" % path)
    return path


# ----- Cassandra (cassandra.md; harness in cstar.py)


@pytest.fixture(scope="session")
def cstar():
    """The test Cassandra as a superuser session. Unreachable is a FAILURE; only
    BEANS_SKIP_CASSANDRA=1 (set by hand for a quick local run) skips, loudly."""
    import cstar as cstar_mod
    if cstar_mod.skip_requested():
        sys.stderr.write("\n*** BEANS_SKIP_CASSANDRA=1: SKIPPING the Cassandra tests ***\n")
        pytest.skip("BEANS_SKIP_CASSANDRA=1: Cassandra tests skipped by request")
    try:
        native, cdir = cstar_mod.locate()
        cs = cstar_mod.Cstar(native, cdir)
        cs.ensure_role(cstar_mod.TEST_ROLE, cstar_mod.TEST_ROLE_PASSWORD)
    except cstar_mod.CassandraUnavailable as e:
        pytest.fail("Cassandra unavailable: %s" % e)
    yield cs
    cs.close()


@pytest.fixture(scope="module")
def cstar_keyspace(cstar):
    """A fresh keyspace per test module with the schema of cassandra.md §2; dropped afterwards."""
    ks = cstar.create_keyspace()
    yield ks
    cstar.resume()
    try:
        cstar.drop_keyspace(ks)
    except Exception as e:  # noqa: BLE001 - a failed drop must not hide the test result
        sys.stderr.write("warning: could not drop keyspace %s: %s\n" % (ks, e))


@pytest.fixture
def cstar_pause(cstar):
    """`with cstar_pause():` SIGSTOPs Cassandra for the block; SIGCONT is guaranteed."""
    yield cstar.paused
    cstar.resume()


@pytest.fixture(scope="module")
def cstar_cluster_factory(cstar, cstar_keyspace, node_binary, tmp_path_factory):
    """make(**kw) -> started cstar.CstarCluster (see its arguments); all stopped at module end."""
    import cstar as cstar_mod
    import proxyproc
    proxy_bin = proxyproc.find_proxy_binary()
    if proxy_bin is None:
        pytest.fail("beansproxy binary missing: cargo build -p beansdb-proxy")
    made = []

    def make(start=True, **kw):
        workdir = str(tmp_path_factory.mktemp("cstar_cluster"))
        c = cstar_mod.CstarCluster(cstar, cstar_keyspace, node_binary, proxy_bin, workdir, **kw)
        made.append(c)
        if start:
            c.start()
        return c

    yield make
    cstar.resume()
    for c in made:
        c.stop()


@pytest.fixture(scope="session")
def ctl_binary():
    import cstar as cstar_mod
    path = cstar_mod.find_ctl_binary()
    if path is None:
        pytest.fail("beansctl binary missing (set BEANSCTL_BIN or cargo build --bins)")
    return path
