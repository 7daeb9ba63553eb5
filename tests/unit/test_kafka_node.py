"""The local broker's command lines, without starting one."""

import base64

from sfcrime.local.kafka import _cluster_id


def test_a_new_cluster_id_is_a_kafka_uuid_that_no_command_line_takes_for_an_option():
    ids = [_cluster_id() for _ in range(2000)]  # one in 64 random ids starts with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
