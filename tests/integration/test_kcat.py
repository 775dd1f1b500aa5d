"""kcat (Debian's, on librdkafka 2.0.2) against the broker: the command-line
checks an operator runs first."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

KCAT_TIMEOUT_S = 30

pytestmark = pytest.mark.skipif(
    shutil.which("kcat") is None, reason="kcat not installed (scripts/test.sh installs it)"
)


def kcat(bootstrap: str, *args: str, stdin_text: str = "") -> str:
    completed = subprocess.run(
        ["kcat", "-b", bootstrap, *args],
        input=stdin_text,
        capture_output=True,
        text=True,
        timeout=KCAT_TIMEOUT_S,
    )
    assert completed.returncode == 0, (
        f"kcat {' '.join(args)} exited {completed.returncode}; stderr:\n{completed.stderr}"
    )
    return completed.stdout


@pytest.mark.timeout(90)
def test_kcat_produces_keyed_lines_and_reads_them_back(broker, topic):
    lines = [f"key{i}:value {i} with spaces" for i in range(50)]
    kcat(broker.bootstrap, "-P", "-t", topic, "-K:", stdin_text="\n".join(lines) + "\n")

    output = kcat(broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s\n")
    assert output.splitlines() == lines

    # Offsets and partition as kcat sees them: one auto-created partition.
    output = kcat(broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%p %o\n")
    assert output.splitlines() == [f"0 {offset}" for offset in range(len(lines))]


@pytest.mark.timeout(60)
def test_kcat_lists_broker_and_topics(broker, topic):
    kcat(broker.bootstrap, "-P", "-t", topic, "-K:", stdin_text="k:v\n")

    listing = kcat(broker.bootstrap, "-L")
    assert re.search(r"^\s*1 brokers:\s*$", listing, re.MULTILINE), listing
    broker_line = re.search(
        rf"^\s*broker (\d+) at {re.escape(broker.host)}:{broker.port}\b", listing, re.MULTILINE
    )
    assert broker_line, f"no broker at {broker.bootstrap} in:\n{listing}"
    broker_id = int(broker_line.group(1))
    assert re.search(rf'^\s*topic "{re.escape(topic)}" with 1 partitions:\s*$', listing, re.MULTILINE), (
        listing
    )

    metadata = json.loads(kcat(broker.bootstrap, "-L", "-J", "-t", topic))
    assert metadata["brokers"] == [{"id": broker_id, "name": broker.bootstrap}]
    [topic_metadata] = metadata["topics"]
    assert topic_metadata["topic"] == topic
    assert "error" not in topic_metadata, topic_metadata
    [partition] = topic_metadata["partitions"]
    assert partition["partition"] == 0
    assert partition["leader"] == broker_id
