"""Leases (docs/cluster.md): the store's lease rows, the instance's identity, and several
``pnbridge serve`` on one database: exactly one delivers each plugin and runs maintenance,
a peer takes over when the holder dies (kill -9: within the lease time) or stops (SIGTERM:
at once), and no event is lost or reordered."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pnbridge.config.tables import parse_config
from pnbridge.errors import ConfigError
from pnbridge.ops.instance import Instance, gone, holder_name
from pnbridge.storage.sqlite.store import SQLiteStore

TTL = 3.0


def test_a_lease_goes_to_one_holder_until_it_runs_out_or_is_released(tmp_path):
    one = SQLiteStore(tmp_path / "db")
    two = SQLiteStore(tmp_path / "db")
    with one.transaction():
        assert one.take_lease("delivery:webhook", "a", 100.0, TTL)
    with two.transaction():
        assert not two.take_lease("delivery:webhook", "b", 102.9, TTL)  # a's until 103
        assert two.take_lease("maintenance", "b", 102.9, TTL)  # another name: free
        assert not two.renew_lease("delivery:webhook", "b", 102.9, TTL)
    with one.transaction():
        assert one.renew_lease("delivery:webhook", "a", 102.0, TTL)  # now until 105
        assert one.take_lease("delivery:webhook", "a", 102.5, TTL)  # its own: kept
    with two.transaction():
        assert not two.take_lease("delivery:webhook", "b", 104.0, TTL)
        assert two.take_lease("delivery:webhook", "b", 105.6, TTL)  # ran out: taken over
    with one.transaction():
        assert not one.renew_lease("delivery:webhook", "a", 106.0, TTL)  # lost, and says so
        assert not one.release_lease("delivery:webhook", "a")  # not a's to release
    shown = {lease.name: lease for lease in one.leases()}
    assert (shown["delivery:webhook"].holder, shown["delivery:webhook"].expires_at,
            shown["delivery:webhook"].taken_at) == ("b", 108.6, 105.6)
    with two.transaction():
        assert two.release_lease("delivery:webhook", "b")
    with one.transaction():
        assert one.take_lease("delivery:webhook", "a", 106.0, TTL)  # released: free at once
    assert [lease.name for lease in one.leases()] == ["delivery:webhook", "maintenance"]


def test_an_instance_is_named_and_its_holder_id_is_its_own():
    named = Instance.create("pbx-a")
    assert named.name == "pbx-a" and holder_name(named.holder) == "pbx-a"
    assert Instance.create("pbx-a").holder != named.holder  # two processes of one name
    default = Instance.create()
    assert default.name.endswith(f":{os.getpid()}") and default.name.startswith(
        os.uname().nodename)
    # One of this machine whose process is gone is known as such; a live one, one of this
    # process (another daemon in it) and one of another machine are not.
    child = subprocess.run([sys.executable, "-c", "from pnbridge.ops.instance import Instance;"
                            " print(Instance.create('x').holder)"],
                           capture_output=True, text=True, check=True)
    assert gone(child.stdout.strip())
    assert not gone(named.holder)
    assert not gone("x#0123456789ab.1.cafe") and not gone("not one of ours")


@pytest.mark.parametrize(("table", "bad", "said"), [
    ("server", {"instance": "x" * 65}, "server.instance: must be 1 to 64 printable"),
    ("server", {"instance": "a\nb"}, "server.instance: must be 1 to 64 printable"),
    ("plugins", {"lease_time": 2.5}, "plugins.lease_time: must be 3 or more"),
    ("plugins", {"poll_interval": 0}, "plugins.poll_interval: must be greater than 0"),
])
def test_bad_instance_lease_and_poll_settings_are_refused(table, bad, said):
    with pytest.raises(ConfigError) as error:
        parse_config({table: bad})
    assert any(said in line for line in error.value.errors), error.value.errors
    assert parse_config({}).plugins.lease_time == 15.0
    assert parse_config({}).plugins.poll_interval == 0.5
