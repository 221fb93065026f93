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
def shared_fixture():
    """The real gobeansdb 2.1 home; missing is a failure, never a skip."""
    path = nodeproc.SHARED_FIXTURE
    if not os.path.isfile(os.path.join(path, "expected.json")):
        pytest.fail("shared gobeansdb fixture missing: %s" % path)
    return path
